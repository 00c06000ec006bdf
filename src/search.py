"""``python -m src.search --config C --space configs/search/cnn.yaml --trials 20 [overrides]`` (docs/tune.md): each
trial a ``fit``, pruned by ``MedianPruner``; rerun, it continues. One device: DDP would start a search per process."""

import argparse
import csv
import io
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

try:  # the `search` extra: without it, one line saying how to install it (not an import traceback)
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import FrozenTrial, TrialState
    from optuna_integration import PyTorchLightningPruningCallback
except ModuleNotFoundError as missing:
    print(f"error: the search needs {missing.name}: pip install -e '.[search]'", file=sys.stderr)
    raise SystemExit(2) from None

from src.errors import UserError
from src.search_space import Space, build, check_space, load_space, overrides, text
from src.train import ClassifierCLI, cli_main

#: What the pruner watches after every epoch, and what ranks the trials.
MONITOR, SCORE = "val/acc", "val/acc_best"
AGAIN = "continue it with the same arguments, or start a new study with --study NAME"


def fit(trial: optuna.Trial, space: Space, base: list[str]) -> float:
    """A fit with the pruning callback; a diverged fit returns NaN (Optuna: FAIL) and the search goes on."""
    built: list[ClassifierCLI] = []

    class TrialCLI(ClassifierCLI):
        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=MONITOR))
            built.append(self)
            run, cwd = Path(trainer.log_dir).absolute(), Path.cwd()  # relative when under cwd: shorter
            trial.set_user_attr("run_dir", str(run.relative_to(cwd) if run.is_relative_to(cwd) else run))
            return trainer

    values = {k: getattr(trial, suggest)(k, **kw) for k, (suggest, kw) in space.items()}
    trial.set_user_attr("failure", "interrupted")  # until it says otherwise (a retry has its original's)
    try:
        cli = cli_main(["fit", *base, *overrides(values)], cli_class=TrialCLI)
        if SCORE not in cli.trainer.callback_metrics:  # type: ignore[union-attr]
            raise UserError(f"trials are ranked by {SCORE} but the run logged none: keep validation on")
        return float(cli.trainer.callback_metrics[SCORE])  # type: ignore[union-attr]
    except SystemExit as stop:
        if stop.code == 1 and built:  # Lightning's exit on Ctrl-C in a fit
            raise KeyboardInterrupt from None
        diverged = stop.code == 2 and built and built[0].trainer.global_step > 0
        trial.set_user_attr("failure", "diverged" if diverged else "error")
        if diverged:
            return math.nan
        trial.study.tell(trial, state=TrialState.FAIL)  # Optuna would let SystemExit leave it RUNNING
        raise
    except Exception as err:
        if not isinstance(err, optuna.TrialPruned):
            trial.set_user_attr("failure", "error")
        raise


def failure(t: FrozenTrial) -> str | None:
    """Why a trial failed (no reason: Ctrl-C or a kill)."""
    return t.user_attrs.get("failure", "interrupted") if t.state == TrialState.FAIL else None


def counted(study: optuna.Study) -> int:
    """Trials that ran to a result: completed, pruned, or diverged."""
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(t.state in done or failure(t) == "diverged" for t in study.get_trials(deepcopy=False))


def recover(study: optuna.Study) -> None:
    """RUNNING trials of a killed search become FAIL; interrupted or errored ones run again first (Optuna's retry)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        print(f"trial {t.number} was interrupted: marked FAIL, queued again")
    retried = {n for t in study.get_trials(deepcopy=False) for n in Retry.retry_history(t)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if failure(t) != "diverged" and t.number not in retried:
            Retry(max_retry=None)(study, t)


def row(t: FrozenTrial, keys: list[str]) -> list[Any]:
    """A trial's line in trials.csv; a pruned or failed trial's score is the best val/acc it reported."""
    score = t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=None)
    notes = [f"re-run of trial {n}" for n in Retry.retry_history(t)[-1:]]
    notes += [f"pruned after epoch {max(t.intermediate_values)}"] if t.state == TrialState.PRUNED else []
    notes += [str(failure(t))] if failure(t) else []
    score_text = f"{score:.6f}" if score is not None and math.isfinite(score) else ""
    values = [text(t.params[k]) if k in t.params else "" for k in keys]
    return [t.number, t.state.name, score_text, *values, t.user_attrs.get("run_dir", ""), "; ".join(notes)]


def write_results(study: optuna.Study, keys: list[str], folder: Path, name: str) -> FrozenTrial | None:
    """trials.csv and best.yaml (if the best run is on disk), each renamed over its last: a kill leaves it whole."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    table = io.StringIO()
    columns = ["trial", "state", SCORE, *keys, "run_dir", "note"]
    csv.writer(table, lineterminator="\n").writerows([columns, *(row(t, keys) for t in trials)])
    files = {"trials.csv": table.getvalue()}
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number), default=None)
    if best is not None and (config_file := Path(best.user_attrs["run_dir"], "config.yaml")).is_file():
        config = yaml.safe_load(config_file.read_text())
        logger = config["trainer"]["logger"]["init_args"]
        logger["name"], logger["version"] = name, None  # a re-fit is a new plain run, logs/<name>/version_<next>
        header = f"# Best trial {best.number} of study {study.study_name} ({SCORE} {best.value:.4f}): {config_file}\n"
        files["best.yaml"] = header + yaml.safe_dump(config, sort_keys=False)
    for file, content in files.items():
        (folder / f".{file}.partial").write_text(content)
        (folder / f".{file}.partial").replace(folder / file)
    return best


def search(argv: list[str]) -> optuna.Study:
    epilog = "Every other argument (--config, --trainer.*, --model.*, --data.*) goes to each trial's fit."
    p = argparse.ArgumentParser(prog="python -m src.search", epilog=epilog, allow_abbrev=False, exit_on_error=False)
    p.add_argument("--space", help="search space YAML: dotted CLI keys -> ranges (configs/search/)")
    p.add_argument("--trials", type=int, default=20, help="completed, pruned or diverged trials to hold (20)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe", help="Optuna sampler (tpe)")
    p.add_argument("--pruner-startup", type=int, default=5, help="completed trials before any is pruned (5)")
    p.add_argument("--pruner-warmup", type=int, default=0, help="epochs a trial runs before it can be pruned (0)")
    p.add_argument("--study", help="study name (default: the config's logger name); files in <logs>/search-<study>/")
    p.add_argument("--seed", type=int, help="sampler seed (default: the config's seed_everything)")
    opts, base = p.parse_known_args(argv)  # the rest, in order, goes to every trial's fit
    base = base[1:] if base[:1] == ["fit"] else base
    if not opts.space or opts.trials < 1:
        raise UserError("give --space SPACE and --trials N (N >= 1), e.g. --space configs/search/cnn.yaml --trials 20")
    if opts.study is not None and not re.fullmatch(r"[\w.-]+", opts.study):
        raise UserError(f"--study {opts.study!r}: use letters, digits, '.', '-' or '_' (it names a folder)")
    if any(a.split("=", 1)[0] == "--ckpt_path" for a in base):
        raise UserError("--ckpt_path: every trial trains from scratch; a search does not resume a checkpoint")
    space, grid = load_space(opts.space)
    if opts.sampler == "grid" and (ranged := [k for k in space if k not in grid]):
        raise UserError(f"--sampler grid: {ranged[0]} is a range; give it values to try, e.g. `grid: [0.001, 0.01]`")
    cli, error = build(base)
    if cli is None:  # a mistake in the training arguments: the CLI's own message, as `src.train` prints it
        sys.stderr.write(error)
        raise SystemExit(2)
    logger = (cli.config.as_dict()["trainer"].get("logger") or {}).get("init_args") or {}
    if not logger.get("save_dir") or not logger.get("name"):
        raise UserError("a search needs the config's TensorBoard logger (a trial is a run): do not override it")
    devices = cli.config.trainer.devices
    if str(devices) != "auto" and cli.trainer.num_devices * cli.trainer.num_nodes > 1:
        raise UserError(f"a search runs on one device: drop --trainer.devices {devices} and --trainer.num_nodes")
    check_space(space, base, f"--space {opts.space}")

    name, study_name = logger["name"], opts.study or logger["name"]
    folder = Path(logger["save_dir"]) / f"search-{study_name}"
    folder.mkdir(parents=True, exist_ok=True)
    # Trials: new runs in the study's folder, on one device (devices=auto would take every GPU and launch DDP).
    trial_args = [*base, f"--trainer.logger.init_args.name={folder.name}", "--trainer.logger.init_args.version=null"]
    trial_args += ["--trainer.devices=1"] if str(devices) == "auto" else []
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial's end is our own line (Optuna's has a traceback)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # Retry: experimental since 2.8
    storage = f"sqlite:///{(folder / 'study.db').absolute()}"
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    kept = {"space": {k: [*suggestion, grid.get(k)] for k, suggestion in space.items()}, "fit_args": base}
    for attr, value in kept.items():  # trials of another setup (epochs, dataset, ranges) are not comparable
        study.set_user_attr(attr, study.user_attrs.get(attr, value))
        if study.user_attrs[attr] != value:
            was = "another --space" if attr == "space" else f"`{' '.join(study.user_attrs[attr])}`"
            raise UserError(f"study {study_name!r} ({storage}) ran its trials with {was}: " + AGAIN)
    study.pruner = optuna.pruners.MedianPruner(opts.pruner_startup, opts.pruner_warmup)
    recover(study)
    seed = (cli.config.seed_everything if opts.seed is None else opts.seed) or 0
    if opts.sampler == "grid":  # the same seed on every rerun: it fixes the grid's order, which trial numbers index
        study.sampler = optuna.samplers.GridSampler(grid, seed=seed)
    else:  # seeded by the study's length too, so a resumed search does not draw its first values again
        drawing = optuna.samplers.TPESampler if opts.sampler == "tpe" else optuna.samplers.RandomSampler
        study.sampler = drawing(seed=seed + len(study.trials))

    def report(study: optuna.Study, t: FrozenTrial) -> None:
        number, state, score, run_dir, note = row(t, [])
        print(f"trial {number} {state}, {SCORE} {score or '-'}: {note or run_dir}", flush=True)
        write_results(study, list(space), folder, name)

    print(f"study {study_name} ({folder}): {counted(study)} of {opts.trials} trials done", flush=True)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    grid_done = opts.sampler == "grid" and study.sampler.is_exhausted(study) and not waiting  # type: ignore[attr-defined]
    left = 0 if grid_done else opts.trials - counted(study)  # Optuna runs no trial for n_trials <= 0
    try:
        study.optimize(lambda trial: fit(trial, space, trial_args), n_trials=left, callbacks=[report])
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to continue study {study_name}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # also when a trial stops the search: the files show every trial so far
        best = write_results(study, list(space), folder, name)
    if counted(study) < opts.trials and opts.sampler == "grid":  # GridSampler stopped the study
        print(f"the grid's {math.prod(map(len, grid.values()))} combinations have all run")
    print(f"trials: {folder / 'trials.csv'}")
    if best is not None:
        refit = f"python -m src.train fit --config {folder / 'best.yaml'}"
        print(f"best: trial {best.number}, {SCORE}={best.value:.4f}, {best.user_attrs['run_dir']}; re-fit: {refit}")
    return study


def main(args: list[str] | None = None) -> optuna.Study | None:
    """Run a search; user mistakes exit 2 with one line."""
    try:
        return search(sys.argv[1:] if args is None else list(args))
    except (UserError, argparse.ArgumentError) as err:
        hint = " (see python -m src.search --help)" if isinstance(err, argparse.ArgumentError) else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
