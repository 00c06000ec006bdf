"""k-fold cross-validation (``python -m src.kfold``): every training image predicted once by the fold model that never
trained on it, a mean ± std table, the fold models as one averaged checkpoint, likely label errors, a killed run that
continues, and mistakes in one line."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.label_errors import flipped_digits
from src.checkpoint_io import read_checkpoint
from src.kfold import best_checkpoint, main
from src.label_issues import find_label_issues
from src.models.classifier import ImageClassifier, probabilities
from src.models.ensemble import ensemble_checkpoint
from src.predict import Predictor
from src.train import cli_main
from tests.conftest import CONFIGS, FAST, kill_at_stall

DATA = ["--data", str(CONFIGS / "data" / "arrays.yaml"), "--data.path=train.npz", "--data.test_path=test.npz"]
#: Digits (1,437 training images, 4 % of their labels flipped), 3 folds of 3 short epochs, no figures.
ARGS = ["--config", str(CONFIGS / "cnn.yaml"), *FAST, *DATA, "--folds", "3", "--trainer.max_epochs=3",
        "--dashboard.every_n_epochs=0", "--model.optimizer.init_args.lr=0.003"]  # fmt: skip
STALL_STEP = 20  # fold 1's second epoch (958 training images: 15 steps an epoch), after its first last.ckpt


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A k-fold run SIGKILLed in fold 1's training, then the same command again, in-process."""
    work = tmp_path_factory.mktemp("kfold")
    flipped = flipped_digits(work, 0.04)
    kill_at_stall("killable_kfold.py", ["1", str(STALL_STEP), *ARGS], work)
    parent = work / "logs" / "cnn-kfold"
    killed = {"fold_0": files(parent / "fold_0"), "listing": sorted(p.name for p in parent.iterdir())}
    killed["fold_1"] = sorted(files(parent / "fold_1"))
    killed["fold process"] = int((work / "stalled").read_text())
    cwd = Path.cwd()
    os.chdir(work)
    try:
        main(ARGS)
    finally:
        os.chdir(cwd)
    return {"work": work, "parent": parent, "flipped": flipped, "killed": killed}


def test_a_killed_kfold_continues_and_predicts_every_training_image_once(run: dict) -> None:
    parent, killed = run["parent"], run["killed"]
    assert killed["listing"] == ["fold_0", "fold_1", "kfold.json"], "killed in fold 1: nothing final yet"
    assert "checkpoints/last.ckpt" in killed["fold_1"] and "oof_predictions.csv" not in killed["fold_1"]
    if Path("/proc").is_dir():  # the fold's own process died with the driver: no orphan races the rerun
        assert not alive(killed["fold process"])
    assert files(parent / "fold_0") == killed["fold_0"], "the finished fold is not run again"
    assert (parent / "fold_1" / "resume_config.yaml").is_file(), "fold 1 resumed from its last.ckpt"

    oof = rows(parent / "oof_predictions.csv")
    ids = [r["id"] for r in oof]
    assert sorted(ids) == sorted(f"train:{i}" for i in range(1437)), "every training image, exactly once"
    assert [int(r["fold"]) for r in oof] == sorted(int(r["fold"]) for r in oof)
    assert list(oof[0]) == ["id", "label", "fold", *(f"prob_{d}" for d in range(10)), "predicted"]
    for fold in range(3):  # the rows are fold i's val split as its best checkpoint saw it: the same accuracy
        mine = [r for r in oof if r["fold"] == str(fold)]
        assert 470 <= len(mine) <= 490
        accuracy = sum(r["label"] == r["predicted"] for r in mine) / len(mine)
        last = read_checkpoint(parent / f"fold_{fold}" / "checkpoints" / "last.ckpt")
        best = next(s for k, s in last["callbacks"].items() if "'monitor': 'val/acc'" in k)
        assert accuracy == pytest.approx(float(best["best_model_score"]), abs=1e-6)
        assert best_checkpoint(parent / f"fold_{fold}").name == Path(best["best_model_path"]).name
    probs = torch.tensor([[float(r[f"prob_{d}"]) for d in range(10)] for r in oof])
    assert torch.allclose(probs.sum(1), torch.ones(len(oof)), atol=1e-5)


def test_the_summary_gives_mean_and_std_over_folds(run: dict) -> None:
    table = {r["metric"]: r for r in rows(run["parent"] / "summary.csv")}
    assert list(table) == ["acc", "balanced_acc", "macro_f1"]
    for metric, row in table.items():
        folds = torch.tensor([float(row[f"fold_{i}"]) for i in range(3)], dtype=torch.float64)
        assert float(row["mean"]) == pytest.approx(float(folds.mean()), abs=1e-4), metric
        assert float(row["std"]) == pytest.approx(float(folds.std()), abs=1e-4), metric
    assert float(table["acc"]["mean"]) > 0.5, "above chance (0.1 for ten digits)"
    markdown = (run["parent"] / "summary.md").read_text()
    assert f"| acc | {table['acc']['mean']} ± {table['acc']['std']} |" in markdown


def test_the_ensemble_checkpoint_predicts_the_mean_of_the_folds(run: dict, run_cli, tmp_path: Path) -> None:
    """The same probabilities through ``predict`` (its json keeps full precision) and ``Predictor``."""
    work, ensemble = run["work"], run["parent"] / "checkpoints" / "ensemble.ckpt"
    test = np.load(work / "test.npz")
    images, labels = torch.from_numpy(test["images"]).unsqueeze(1), torch.from_numpy(test["labels"])
    with torch.no_grad():
        folds = [ImageClassifier.from_checkpoint(best_checkpoint(run["parent"] / f"fold_{i}")) for i in range(3)]
        mean = torch.stack([probabilities(m(images)) for m in folds]).mean(0)
    data = [*DATA[:2], f"--data.path={work / 'train.npz'}", f"--data.test_path={work / 'test.npz'}"]
    run_cli("predict", "", "--ckpt_path", str(ensemble), *data, "--predictions.top_k=10",
            f"--predictions.output_dir={tmp_path}")  # fmt: skip
    records = json.loads((tmp_path / "predictions.json").read_text())
    cli = torch.tensor([[r[f"top{k}_prob"] for k in range(1, 11)] for r in records])
    order = torch.tensor([[int(r[f"top{k}"]) for k in range(1, 11)] for r in records])
    assert len(records) == len(images) == 360
    assert torch.allclose(cli, mean.gather(1, order), atol=1e-6, rtol=0)
    predictor = Predictor.from_checkpoint(ensemble, device="cpu")
    assert torch.allclose(predictor.probabilities(images), mean, atol=1e-6, rtol=0)
    assert (mean.argmax(1) == labels).float().mean() > 0.5


def test_the_ensemble_exports_to_onnx_with_the_same_probabilities(run: dict, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="export extra absent: pip install -e '.[export]'")
    ensemble = run["parent"] / "checkpoints" / "ensemble.ckpt"
    cli_main(["export", "--ckpt_path", str(ensemble), "--output", str(tmp_path / "export"), "--pt2", "false"])
    images = torch.from_numpy(np.load(run["work"] / "test.npz")["images"][:50]).unsqueeze(1)
    onnx = Predictor.from_onnx(tmp_path / "export").probabilities(images)
    assert torch.allclose(onnx, Predictor.from_checkpoint(ensemble, device="cpu").probabilities(images), atol=1e-5)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_an_ensemble_averages_probabilities(task: str) -> None:
    """softmax (sigmoid) of the ensemble's output is the mean of its members' softmax (sigmoid) probabilities."""
    hparams = {"class_names": ["a", "b", "c"], "input_shape": (1, 8, 8), "task": task, "input_mean": [0.3],
               "input_std": [0.4]}  # fmt: skip
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = ImageClassifier.from_checkpoint({"hyper_parameters": hparams})
        members.append({"hyper_parameters": hparams, "state_dict": model.state_dict(), "model": model})
    ensemble = ImageClassifier.from_checkpoint(ensemble_checkpoint(members))
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        mean = torch.stack([probabilities(m["model"](images), task) for m in members]).mean(0)
        assert torch.allclose(probabilities(ensemble(images), task), mean, atol=1e-6, rtol=0)
    assert ensemble.task == task


def test_the_flipped_labels_rank_first_among_the_label_issues(run: dict) -> None:
    issues, flipped = rows(run["parent"] / "label_issues.csv"), {f"train:{i}" for i in run["flipped"]}
    top = [r["id"] for r in issues[: len(flipped)]]
    found = len(flipped & set(top)) / len(flipped)
    print(f"{len(issues)} label issues; {found:.0%} of the top {len(flipped)} are flipped labels")
    assert found >= 0.5
    scores = [float(r["score"]) for r in issues]
    assert scores == sorted(scores), "ranked by self-confidence, lowest first"
    assert (run["parent"] / "label_issues.png").is_file()


def test_confident_learning_flags_images_confidently_of_another_class() -> None:
    """Per-class thresholds (the mean probability of the class over its own images): t_0 = 2/3, t_1 = 0.5125. Image 2
    (labelled 0) is confidently 1, image 4 (labelled 1) confidently 0; image 6's most probable class is 0, but below
    t_0: not confident, not flagged. Lowest self-confidence first."""
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.4, 0.6], [0.75, 0.25], [0.2, 0.8], [0.6, 0.4]])
    issues = find_label_issues(probs, torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    assert [(row, suggested) for row, suggested, _ in issues] == [(4, 0), (2, 1)]
    assert [score for _, _, score in issues] == pytest.approx([0.25, 0.4])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--folds", "1"], "--folds 1: cross-validation needs at least 2 folds"),
        (["--folds", "0"], "--folds 0: cross-validation needs at least 2 folds"),
        (["--folds", "x"], "argument --folds: invalid int value: 'x'"),
        (["--folds", "19"], "class 'low' has 18 image(s), too few for --folds 19"),
        (["--folds", "3", "--data.fold=1"], "--data.fold: src.kfold gives each fold its val split (--folds K)"),
        (["--folds", "3", "--ckpt_path=last.ckpt"], "--ckpt_path: src.kfold gives each fold"),
        (["--no-config"], "give the training config: --config configs/<model>.yaml"),
        (["--no-config", "--config", "nope.yaml"], "nope.yaml"),
    ],
    ids=["one-fold", "zero-folds", "not-a-number", "too-many-folds", "fold-given", "ckpt_path", "no-config", "missing"],
)
def test_mistakes_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, array_file: Path, args: list[str], expected: str
) -> None:
    """On 60 images of 3 classes: 18 of each in the training pool (the rest is the test split)."""
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(CONFIGS / "cnn.yaml"), *FAST, "--data", str(CONFIGS / "data" / "arrays.yaml")]
    given = ["--folds", "3", *args[1:]] if args[0] == "--no-config" else [*base, f"--data.path={array_file}", *args]
    with pytest.raises(SystemExit) as exit:
        main(given)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "logs").exists(), "nothing is written"


def test_a_rerun_with_other_arguments_is_refused(run: dict, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(run["work"])
    before = files(run["parent"])
    with pytest.raises(SystemExit) as exit:
        main([*ARGS, "--trainer.max_epochs=4"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds a k-fold run of other arguments" in err, err
    assert files(run["parent"]) == before
