"""The one exception type for user mistakes (bad config, missing data or checkpoint).

``src.train.cli_main`` prints its message as one line and exits non-zero, without a traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the bad value and the fix."""
