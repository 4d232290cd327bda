"""The one exception type for bad user input in the `speaker` core.

CLIs turn it into a single ``error: ...`` line (see :mod:`speaker.cli`); code that
raises it must name the file or value at fault and, where useful, what to do.
"""


class UserError(Exception):
    """Bad input (file, value, option) that the user can fix; never a bug."""
