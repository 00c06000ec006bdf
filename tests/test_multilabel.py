"""Multi-label models: a sigmoid per label, thresholds tuned on validation and kept in the checkpoint, the scores
named by label, and every output (report, predictions.csv, Predictor, ONNX) giving the labels above threshold."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from src.models.classifier import ImageClassifier
from src.models.multilabel import scores, tune_thresholds
from src.predict import Predictor
from tests.datasets import PairedDigits

DATA = ["--data", "tests.datasets.PairedDigits"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One 3-epoch CNN fit on paired digits, then ``test`` and ``predict`` of its last checkpoint."""
    from src.train import cli_main
    from tests.conftest import CONFIGS, FAST

    root = tmp_path_factory.mktemp("multilabel")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli = cli_main(["fit", "--config", str(CONFIGS / "cnn.yaml"), *FAST, *DATA, "--trainer.max_epochs=3"])
        run = Path(cli.trainer.log_dir).resolve()
        ckpt = str(run / "checkpoints" / "last.ckpt")
        config = ["--config", str(run / "config.yaml"), *FAST, "--ckpt_path", ckpt]
        tested = cli_main(["test", *config])
        cli_main(["predict", *config])
    return run, tested


def test_scores_match_scikit_learn() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = (torch.rand(200, 4, generator=gen) < 0.3).float()
    probs = (targets * 0.4 + torch.rand(200, 4, generator=gen) * 0.6).clamp(0, 1)
    result = scores(probs, targets, list("abcd"), torch.full((4,), 0.5))
    predicted = (probs >= 0.5).numpy()
    assert result["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
    assert result["macro_f1"] == pytest.approx(f1_score(targets, predicted, average="macro"))
    assert result["map"] == pytest.approx(average_precision_score(targets, probs, average="macro"), abs=1e-6)
    tuned = tune_thresholds(probs, targets)  # each label's threshold is at least as good as 0.5 for it
    tuned_f1 = f1_score(targets, (probs >= tuned).numpy(), average=None)
    assert (tuned_f1 >= f1_score(targets, predicted, average=None) - 1e-12).all()


def test_a_multilabel_fit_learns_and_keeps_its_thresholds(trained: tuple[Path, object]) -> None:
    run, tested = trained
    metrics = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    assert metrics["test/map"] > 0.8 and metrics["test/micro_f1"] > 0.6, metrics  # chance AP is ~0.2
    assert {f"test/f1_per_label/{d}" for d in range(10)} <= set(metrics)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["task"] == "multilabel"
    thresholds = checkpoint["state_dict"]["thresholds"]
    assert thresholds.shape == (10,) and not torch.equal(thresholds, torch.full((10,), 0.5))  # tuned

    report = json.loads((run / "test_report.json").read_text())
    assert [label["class"] for label in report["labels"]] == PairedDigits.class_names
    assert {"precision", "recall", "f1", "ap", "support", "threshold"} <= set(report["labels"][0])
    assert report["map"] == pytest.approx(metrics["test/map"], abs=1e-6)
    assert [label["threshold"] for label in report["labels"]] == pytest.approx(thresholds.tolist(), abs=1e-4)
    assert sum(label["support"] for label in report["labels"]) == PairedDigits().split_labels("test").sum()


def test_predictions_list_the_labels_above_threshold(trained: tuple[Path, object]) -> None:
    run, _ = trained
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    data = PairedDigits()
    assert len(rows) == len(data.split_labels("test"))
    predictor = Predictor.from_checkpoint(run / "checkpoints" / "last.ckpt")
    images = data._splits["test"][0][:20]
    probs = predictor.probabilities(list(images))
    assert probs.shape == (20, 10) and not torch.allclose(probs.sum(1), torch.ones(20))  # sigmoids, not a softmax
    thresholds = predictor.model.thresholds
    for row, p, prediction in zip(rows, probs, predictor.predict(list(images)), strict=False):
        expected = {str(d) for d in range(10) if p[d] >= thresholds[d]}
        assert set(filter(None, row["labels"].split("|"))) == expected == set(prediction.classes)
        assert [float(row[f"prob_{d}"]) for d in range(10)] == pytest.approx(p.tolist(), abs=1e-4)
    right = sum(set(r["labels"].split("|")) == set(r["target"].split("|")) for r in rows) / len(rows)
    assert right > 0.5  # the whole label set, on most images


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the export extra")
def test_the_onnx_export_gives_the_same_probabilities_and_labels(trained: tuple[Path, object], tmp_path: Path) -> None:
    from src.export import export_checkpoint

    run, _ = trained
    export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "export", pt2=False)
    spec = json.loads((tmp_path / "export" / "input_spec.json").read_text())
    assert spec["task"] == "multilabel" and len(spec["thresholds"]) == 10
    images = list(PairedDigits()._splits["test"][0][:32])
    checkpoint, onnx = (
        Predictor.from_checkpoint(run / "checkpoints" / "last.ckpt"),
        Predictor.from_onnx(tmp_path / "export"),
    )
    assert (checkpoint.probabilities(images) - onnx.probabilities(images)).abs().max() <= 1e-4
    assert [p.classes for p in checkpoint.predict(images)] == [p.classes for p in onnx.predict(images)]


def test_the_task_follows_the_labels(run_cli, capsys: pytest.CaptureFixture) -> None:
    from tests.test_bad_input import run_expecting_error

    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", *DATA, "--model.task", "multiclass")
    assert "--model.task multiclass" in err and "data is multilabel" in err
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", "--model.task=multilabel")
    assert "--model.task multilabel" in err and "data is multiclass" in err
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", *DATA, "--model.loss", "nll")
    assert "--model.loss nll" in err and "multi-label" in err
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", *DATA, "--data.sampler", "balanced")
    assert "--data.sampler balanced" in err and "--model.class_weights balanced" in err
    assert not Path("logs").exists()


def test_multilabel_class_weights_are_positive_weights_per_label() -> None:
    model = ImageClassifier(PairedDigits.class_names, (1, 8, 16), task="multilabel", class_weights="balanced")
    labels = PairedDigits().split_labels("train")
    from src.models.tasks import balanced_weights

    weights = balanced_weights(labels, 10)
    assert weights == pytest.approx(((len(labels) - labels.sum(0)) / labels.sum(0)).tolist())
    out, targets = torch.randn(4, 10), labels[:4]
    model.class_weight.copy_(weights)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out, targets, pos_weight=weights)
    assert model.criterion(out, targets) == pytest.approx(expected.item())
