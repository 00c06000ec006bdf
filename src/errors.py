"""User mistakes (bad config, missing data or checkpoint): one exception type, reported in one line, exit code 2."""

import re
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


def argument_problem(message: str) -> tuple[str, str, str]:
    """``(option, value, reason)`` from jsonargparse's account of a bad value (a tree of nested parsers and union
    alternatives): the full dotted option, what was given and the first reason. Adapter on jsonargparse's message
    text (it raises no structured error): tests/test_bad_input.py fails if it changes."""
    option = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    if (unknown := re.search(r"Option '([^']+)' is not accepted", message)) is not None:
        owner = re.search(r"class_path[= ]'([^']+)'", message)
        where = f"{owner.group(1)} (--{option}.help {owner.group(1)} lists them)" if owner else option
        return f"{option}.{unknown.group(1)}", "", f"not an option of {where}"
    if (missing := re.search(r"module '[^']+' has no attribute '[^']+'", message)) is not None:
        return option, "", missing.group(0)
    expected = re.findall(r"Expected a ((?!path |dot import)[^\n]+?)(?:\. Got value: .*)?$", message, re.M)
    kinds = [re.sub(r"<class '([^']+)'>", r"\1", kind) for kind in expected if kind != "<class 'NoneType'>"]
    kinds = [re.sub(r"^typing\.Literal\[(.*)\]$", r"one of \1", kind) for kind in kinds]
    value = re.search(r"NestedArg\(key='[^']*', val='?(.+?)'?\)$", message, re.M)
    value = value or re.search(r"(?:Given|Got) value: (.+?)(?:\. Got value: .*)?$", message, re.M)
    reason = "expected " + " or ".join(kinds) if kinds else message.strip().splitlines()[-1].strip(" -")
    return option, value.group(1) if value else "", reason
