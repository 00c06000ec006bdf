"""``test`` writes a report whose numbers follow from the confusion matrix, into the checkpoint's own run."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import CONFIGS

CLASSES = ["cat", "dog", "owl"]
#: (true, predicted) -> how many test images; rows = true class. Known by construction, see ArgmaxNet.
CONFUSION = [[4, 1, 0], [0, 2, 1], [2, 0, 3]]


class ArgmaxNet(nn.Module):
    """Predicts the class whose pixel is brightest: a 1 x K image with one lit pixel is predicted as that class."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.num_classes] * 10


def one_hot_images(predicted: list[int]) -> np.ndarray:
    images = np.zeros((len(predicted), 1, len(CLASSES)), dtype=np.uint8)
    images[np.arange(len(predicted)), 0, predicted] = 255
    return images


def test_report_numbers_follow_from_a_known_confusion_matrix(run_cli, tmp_path: Path, capsys) -> None:
    true, predicted = [], []
    for t, row in enumerate(CONFUSION):
        for p, count in enumerate(row):
            true += [t] * count
            predicted += [p] * count
    np.savez(tmp_path / "test.npz", images=one_hot_images(predicted), labels=np.array(true))
    train = np.arange(30) % 3
    np.savez(tmp_path / "train.npz", images=one_hot_images(list(train)), labels=train, class_names=np.array(CLASSES))
    cli = run_cli(
        "test", "cnn.yaml", "--untrained=true",
        "--model.network=tests.test_report.ArgmaxNet", "--data", str(CONFIGS / "data/arrays.yaml"),
        f"--data.path={tmp_path / 'train.npz'}", f"--data.test_path={tmp_path / 'test.npz'}",
    )  # fmt: skip
    printed = capsys.readouterr().out
    run_dir = Path(cli.trainer.log_dir).resolve()

    with (run_dir / "confusion_matrix.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *CLASSES]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == CONFUSION

    report = json.loads((run_dir / "test_report.json").read_text())
    matrix = np.array(CONFUSION)
    support, correct = matrix.sum(1), matrix.diagonal()
    for i, c in enumerate(report["classes"]):
        assert c["class"] == CLASSES[i]
        assert c["support"] == support[i]  # row sums = images of the class
        assert c["accuracy"] == pytest.approx(correct[i] / support[i])  # diagonal / row sum
        assert c["precision"] == pytest.approx(correct[i] / matrix[:, i].sum())
        assert c["f1"] == pytest.approx(2 * c["precision"] * c["recall"] / (c["precision"] + c["recall"]))
    assert report["accuracy"] == pytest.approx(correct.sum() / matrix.sum())
    assert report["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in report["classes"]]))
    assert cli.trainer.callback_metrics["test/acc"].item() == pytest.approx(report["accuracy"])

    with (run_dir / "test_report.csv").open() as f:
        table = list(csv.DictReader(f))
    for c, row in zip(report["classes"], table, strict=False):  # CSV = JSON = printed table, to 4 decimals
        values = [f"{c[k]:.4f}" for k in ("precision", "recall", "f1", "accuracy")]
        assert [row[k] for k in ("precision", "recall", "f1", "accuracy")] == values
        assert f"{c['class']:<12}  {values[0]:>9}  {values[1]:>6}  {values[2]:>6}  {values[3]:>8}" in printed
    assert table[-1]["class"] == "overall" and table[-1]["accuracy"] == f"{report['accuracy']:.4f}"
    recalls = correct / support
    assert report["balanced_accuracy"] == pytest.approx(recalls[support > 0].mean())  # mean recall, as sklearn's
    assert cli.trainer.callback_metrics["test/balanced_acc"].item() == pytest.approx(report["balanced_accuracy"])
    assert cli.trainer.callback_metrics["test/macro_f1"].item() == pytest.approx(report["macro_f1"], abs=1e-6)
    overall = f"overall accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f}"
    assert f"{overall}, macro F1 {report['macro_f1']:.4f}" in printed
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluations_join_the_checkpoints_run_and_overwrite_nothing(run_cli, tmp_path: Path) -> None:
    cli = run_cli("fit", "fc.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4")
    run_dir = Path(cli.trainer.log_dir).resolve()
    training_files = [p for p in run_dir.rglob("*") if p.is_file()]
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in training_files}
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    tested = run_cli("test", str(run_dir / "config.yaml"), f"--ckpt_path={best}")
    predicted = run_cli("predict", str(run_dir / "config.yaml"), f"--ckpt_path={best}")
    assert Path(tested.trainer.log_dir).resolve() == Path(predicted.trainer.log_dir).resolve() == run_dir
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]  # no new version_N
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in training_files} == digest
    for name in ("test_report.csv", "confusion_matrix.png", "test_config.yaml", "predictions.csv"):
        assert (run_dir / name).is_file(), name
