"""stage2_student package."""

import store  # noqa: F401  (first: its Ctrl-C handling covers the imports that follow)
