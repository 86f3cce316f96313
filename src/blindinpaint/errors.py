"""User-facing errors.

Anything a user can cause (bad file, bad argument, bad config key) raises
:class:`UserError`; the CLI prints its message on one line and exits with
status 2 instead of showing a traceback.
"""


class UserError(Exception):
    """An error caused by input the user controls; the message is shown as-is."""


class ConfigError(UserError):
    """Unknown key, wrong type or invalid value in a config file or override."""
