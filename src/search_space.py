"""``src.search``'s space: dotted CLI keys -> Optuna choices or ranges, checked by building the CLI before any study."""

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import get_loader
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from src.errors import UserError
from src.train import ClassifierCLI, cli_main

EXAMPLE = "e.g. `model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-1, log: true}` or `data.batch_size: [32, 64]`"
#: Each key's ``Trial.suggest_*`` method and its arguments: ``("suggest_float", {"low": .., "high": .., "log": ..})``.
Space = dict[str, tuple[str, dict[str, Any]]]


def load_space(path: str) -> tuple[Space, dict[str, list]]:
    """The file as Optuna suggestions and GridSampler's space (choices, or ``grid:``), read as the CLI reads configs."""
    try:
        spec = get_loader("yaml")(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:  # a missing file, or not YAML
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise UserError(f"--space {path}: {reason}; spaces live in configs/search/, e.g. cnn.yaml") from None
    if not isinstance(spec, dict) or not spec:
        raise UserError(f"--space {path}: expected a mapping of dotted CLI keys to ranges, {EXAMPLE}")
    space: Space = {}
    grid = {str(k): v for k, v in spec.items() if isinstance(v, list)}
    for key, entry in spec.items():
        key, where = str(key), f"--space {path}: {key}"
        try:
            if isinstance(entry, list):
                space[key] = ("suggest_categorical", {"choices": entry})
                CategoricalDistribution(entry)  # Optuna's check of the choices
                continue
            if not isinstance(entry, dict):
                raise TypeError(f"{entry!r} is neither a list of choices nor a mapping")
            args = {k: v for k, v in entry.items() if k != "grid"}  # low, high, log, step
            whole = all(isinstance(v, int) for v in args.values())
            dist = (IntDistribution if whole else FloatDistribution)(**args)
            space[key] = ("suggest_int" if whole else "suggest_float", args)
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: {err}; give choices or a range, {EXAMPLE}") from None
        if "grid" in entry:
            grid[key] = entry["grid"]
            if not isinstance(grid[key], list) or not all(dist.low <= v <= dist.high for v in grid[key]):
                raise UserError(f"{where}: `grid` lists values in [low, high] for --sampler grid, e.g. [1, 2]")
    return space, grid


def text(value: Any) -> str:  # as the CLI reads it: null, true, 0.001, [256, 128]
    return value if isinstance(value, str) else json.dumps(value)


def overrides(values: dict[str, Any]) -> list[str]:
    """``--key=value`` of the values; a class (``model.optimizer``) before its ``init_args``."""
    return [f"--{k}={text(v)}" for k, v in sorted(values.items(), key=lambda kv: kv[0].count("."))]


def build(args: list[str]) -> tuple[ClassifierCLI | None, str]:
    """The CLI built quietly (``run=False``: nothing written), or its error."""
    err = io.StringIO()
    logging.disable(logging.INFO)  # Lightning's device lines at every build
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cli_main(args, run=False), ""
    except SystemExit:
        return None, err.getvalue()
    finally:
        logging.disable(logging.NOTSET)


def check_space(space: Space, base: list[str], where: str) -> None:
    """Build the CLI with every key's lowest value, its highest, each other choice; name the first override refused."""
    ends = {k: kw.get("choices") or (kw["low"], kw["high"]) for k, (_, kw) in space.items()}
    low, high = {k: v[0] for k, v in ends.items()}, {k: v[-1] for k, v in ends.items()}
    for args in map(overrides, [low, high, *({**low, k: c} for k, v in ends.items() for c in v[1:-1])]):
        if build([*base, *args])[0] is not None:
            continue
        i, error = next((i, e) for i in range(len(args)) if (e := build([*base, *args[: i + 1]])[1]))
        key = args[i].split("=", 1)[0]
        after = "".join(f" after {a}" for a in args[:i] if key.startswith(a.split("=", 1)[0] + "."))
        reason = error.strip().splitlines()[-1].removeprefix("error: ").rstrip(".")  # the CLI's one-line error
        hint = "see the keys with --print_config" if "usage:" in error else "narrow its range or choices"
        raise UserError(f"{where}: {key[2:]}: the CLI refuses {args[i]}{after} ({reason}); {hint}")
