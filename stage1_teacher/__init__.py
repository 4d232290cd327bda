"""stage1_teacher package."""

import store  # noqa: F401  (first: its Ctrl-C handling covers the imports that follow)
