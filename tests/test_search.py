"""Hyper-parameter search: trials are ordinary fits, the best one re-fits to its score, bad trials are pruned or
failed, a killed search continues its study, and mistakes are one line."""

import csv
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna_integration", reason="search extra absent: pip install -e '.[search]'")

import optuna

from src.search import main, recover
from tests.conftest import CONFIGS, FAST, kill_at_stall

ONE_EPOCH = ["--config", str(CONFIGS / "cnn.yaml"), *FAST, "--trainer.max_epochs=1"]
#: Shorter trials where the acceptance does not need a whole epoch (no figures either).
QUICK = ["--trainer.limit_train_batches=10", "--dashboard.every_n_epochs=0"]


def trials(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def versions(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("version_"))


@pytest.fixture
def search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``search(*args)``: ``python -m src.search`` in-process in ``tmp_path``, one-epoch CNN runs on digits."""
    monkeypatch.chdir(tmp_path)
    return lambda *args: main([*ONE_EPOCH, *args])


def space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_three_trials_then_best_yaml_refits_to_the_recorded_accuracy(search, run_cli, tmp_path: Path) -> None:
    search("--space", str(CONFIGS / "search" / "cnn.yaml"), "--trials", "3")

    folder = tmp_path / "logs" / "search-cnn"
    rows = trials(folder)
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    assert versions(folder) == ["version_0", "version_1", "version_2"]
    for row in rows:  # each trial is a run directory like any fit's
        run = tmp_path / row["run_dir"]
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    best = max(rows, key=lambda r: float(r["val/acc_best"]))

    config = yaml.safe_load((folder / "best.yaml").read_text())
    assert config["trainer"]["logger"]["init_args"]["name"] == "cnn"
    assert config["trainer"]["logger"]["init_args"]["version"] is None
    assert config["model"]["optimizer"]["class_path"] == best["model.optimizer"]
    refit = run_cli("fit", folder / "best.yaml")
    score = float(refit.trainer.callback_metrics["val/acc_best"])
    print(f"trials {[r['val/acc_best'] for r in rows]}; best.yaml re-fit {score:.6f} vs {best['val/acc_best']}")
    assert Path(refit.trainer.log_dir) == tmp_path / "logs" / "cnn" / "version_0", "a new plain run"
    assert abs(score - float(best["val/acc_best"])) <= 0.01
    assert score > 0.5, "above chance (0.1 for ten digits)"


def test_grid_prunes_a_bad_trial_and_fails_a_diverged_one(search, tmp_path: Path, capsys) -> None:
    """Optuna's GridSampler, in its seeded order (--seed 42): SGD at lr 1e4 (diverges: FAIL, the search goes on), a
    good learning rate, a hopeless one (pruned: below the median of the completed trials after its epoch), then the
    grid has run."""
    grid = space(tmp_path, "model.optimizer.init_args.lr: [1.0e+4, 0.03, 1.0e-7]\n")
    sgd = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.init_args.momentum=0.9"]
    search(
        *sgd, "--space", grid, "--sampler", "grid", "--seed", "42", "--trials", "10", "--pruner-startup", "1", *QUICK
    )

    rows = trials(tmp_path / "logs" / "search-cnn")
    assert [r["model.optimizer.init_args.lr"] for r in rows] == ["10000.0", "0.03", "1e-07"], "GridSampler's order"
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "PRUNED"]
    assert rows[0]["note"] == "diverged" and rows[2]["note"] == "pruned after epoch 0"
    assert float(rows[2]["val/acc_best"]) < float(rows[1]["val/acc_best"])
    assert "the grid's 3 combinations have all run" in capsys.readouterr().out


def test_a_killed_search_continues_its_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL in trial 1's training, then the same command: trial 0 is kept, trial 1 is marked FAIL and its values
    run again as trial 2; the study ends with the 2 trials asked for that ran to a result (3 rows)."""
    lr = space(tmp_path, "model.optimizer.init_args.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    args = [*ONE_EPOCH, *QUICK, "--space", lr, "--trials", "2", "--sampler", "random"]
    kill_at_stall("killable_search.py", ["1", *args], tmp_path)
    folder = tmp_path / "logs" / "search-cnn"
    before = trials(folder)
    assert [r["state"] for r in before] == ["COMPLETE"]

    monkeypatch.chdir(tmp_path)
    main(args)

    rows = trials(folder)
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE")]
    assert rows[0] == before[0], "a completed trial is not run again"
    assert rows[1]["note"] == "interrupted" and rows[1]["run_dir"] == "logs/search-cnn/version_1"
    assert rows[2]["note"] == "re-run of trial 1"
    assert rows[2]["model.optimizer.init_args.lr"] == rows[1]["model.optimizer.init_args.lr"]
    assert rows[1]["model.optimizer.init_args.lr"] != rows[0]["model.optimizer.init_args.lr"]
    assert versions(folder) == ["version_0", "version_1", "version_2"]
    assert (folder / "best.yaml").is_file()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_grid_search_reruns_its_point_then_the_rest_of_the_grid() -> None:
    """``recover`` queues a trial left RUNNING again with its grid point: Optuna's GridSampler raises KeyError after a
    plainly enqueued trial when one point is left (optuna/optuna#6844), and would count the point as visited."""
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0))

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_categorical("x", [1, 2, 3])

    study.optimize(objective, n_trials=1)
    killed = study.ask()
    objective(killed)  # left RUNNING, as by a SIGKILL
    recover(study)
    study.optimize(objective, n_trials=10)
    runs = [(t.state.name, t.params["x"]) for t in study.trials]
    assert runs[1:3] == [("FAIL", killed.params["x"]), ("COMPLETE", killed.params["x"])], runs
    assert sorted(x for state, x in runs if state == "COMPLETE") == [1, 2, 3] and len(runs) == 4


@pytest.mark.parametrize(
    ("text", "extra", "expected"),
    [
        (None, [], "--space nope.yaml: No such file or directory"),
        ("model.dropout: [0.1, 0.2]\n", [], "model.dropout: the CLI refuses --model.dropout=0.1"),
        (
            "model.optimizer: [torch.optim.Adam, torch.optim.SGD]\nmodel.optimizer.init_args.momentum: [0.9]\n",
            [],
            "refuses --model.optimizer.init_args.momentum=0.9 after --model.optimizer=torch.optim.Adam",
        ),
        (
            "model.network.init_args.dropout: {low: 0.0, high: 1.5}\n",
            [],
            "refuses --model.network.init_args.dropout=1.5 (invalid configuration: dropout probability has to be",
        ),
        ("data.batch_size: {low: 16}\n", [], "data.batch_size: IntDistribution.__init__() missing 1 required"),
        ("model.optimizer.init_args.lr: {low: 0.001, high: 0.1}\n", ["--sampler", "grid"], "grid: ["),
        ("data.batch_size: [32, 64]\n", ["--sampler", "bayes"], "argument --sampler: invalid choice: 'bayes'"),
        ("data.batch_size: [32, 64]\n", ["--trainer.devices=2"], "on one device: drop --trainer.devices 2"),
        ("data.batch_size: {low: 16, high: 64, lgo: true}\n", [], "unexpected keyword argument 'lgo'"),
        ("data.batch_size: [32, 64]\n", ["--ckpt_path", "last.ckpt"], "--ckpt_path: every trial trains from scratch"),
    ],
    ids=[
        "missing-space",
        "unknown-key",
        "key-of-another-class",
        "value-refused",
        "incomplete-range",
        "grid-of-a-range",
        "sampler",
        "ddp",
        "unknown-field",
        "ckpt_path",
    ],
)
def test_mistakes_exit_2_with_one_line(search, tmp_path: Path, capsys, text: str | None, extra: list, expected: str):
    path = space(tmp_path, text) if text is not None else "nope.yaml"
    with pytest.raises(SystemExit) as exit:
        search("--space", path, "--trials", "2", *extra)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "logs").exists(), "nothing is created"


def test_a_study_continues_only_with_its_own_training_arguments(search, tmp_path: Path, capsys) -> None:
    """Trials of another epoch count (or dataset) are not ranked against the study's: one line, exit 2, the study and
    its runs untouched."""
    lr = space(tmp_path, "model.optimizer.init_args.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    search(*QUICK, "--space", lr, "--trials", "1")
    folder = tmp_path / "logs" / "search-cnn"
    before = (folder / "trials.csv").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        search(*QUICK, "--space", lr, "--trials", "2", "--trainer.max_epochs=2")
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "continue it with the same arguments, or start a new study with --study NAME" in err
    assert (folder / "trials.csv").read_text() == before and versions(folder) == ["version_0"]
