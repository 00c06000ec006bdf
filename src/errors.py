"""The one exception type for user mistakes (bad config, missing data or checkpoint), reported as one line and exit
code 2, without a traceback."""

import sys

from lightning.pytorch.utilities import rank_zero_only


class UserError(Exception):
    """A mistake the user can fix; the message names the bad value and the fix."""


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from, outermost first (jsonargparse and Lightning wrap what they call)."""
    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    return chain


def exit_if_user_error(err: BaseException) -> None:
    """A ``UserError`` anywhere in ``err``'s chain: print its message once (rank 0 under DDP), exit 2."""
    cause = next((e for e in exception_chain(err) if isinstance(e, UserError)), None)
    if cause is None:
        return
    message = str(cause)
    if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the user's message
        message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
    if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process stops; one says why
        print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
