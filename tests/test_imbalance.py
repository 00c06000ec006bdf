"""Imbalanced classes: loss weights (``--model.class_weights``) kept in the checkpoint, a class-balanced sampler that
is deterministic, exact on resume and sharded under DDP, and the balanced scores to choose checkpoints by."""

from pathlib import Path

import pytest
import torch

from src.data.sampling import BalancedSampler
from src.models.classifier import ImageClassifier
from src.models.tasks import balanced_weights

DATA = ["--data", "tests.datasets.ImbalancedDigits"]
NAMES = [str(d) for d in range(10)]


def test_balanced_class_weights_come_from_the_training_split_and_are_kept(run_cli) -> None:
    cli = run_cli("fit", "cnn.yaml", *DATA, "--model.class_weights=balanced", "--trainer.max_epochs=1",
                  "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1")  # fmt: skip
    labels = cli.datamodule.split_labels("train")
    counts = torch.bincount(labels, minlength=10).double()
    expected = len(labels) / (10 * counts)  # scikit-learn's "balanced"
    assert counts[5:].max() * 5 < counts[:5].min()  # the data is imbalanced
    assert cli.model.class_weight.double() == pytest.approx(expected.tolist(), rel=1e-6)
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    restored = ImageClassifier.from_checkpoint(ckpt)
    assert torch.equal(restored.class_weight, cli.model.class_weight)  # predict/test get the weights it trained with
    out, targets = torch.randn(6, 10), torch.tensor([0, 5, 9, 1, 7, 7])
    weighted = torch.nn.functional.cross_entropy(out, targets, weight=restored.class_weight)
    assert restored.criterion(out, targets).item() == pytest.approx(weighted.item())


def test_class_weights_as_a_list_or_by_name() -> None:
    listed = ImageClassifier(NAMES, (1, 8, 8), class_weights=[1.0] * 9 + [3.0])
    named = ImageClassifier(NAMES, (1, 8, 8), class_weights={"9": 3.0})
    assert torch.equal(listed.class_weight, named.class_weight) and named.class_weight[9] == 3.0
    assert ImageClassifier(NAMES, (1, 8, 8)).class_weight is None  # unweighted by default


@pytest.mark.parametrize(
    ("weights", "said"),
    [([1.0, 2.0], "has 2 values"), ({"ten": 2.0}, "unknown class(es) ['ten']"), ([0.0] * 10, "not all 0")],
)
def test_bad_class_weights_are_one_line(run_cli, capsys, weights: object, said: str) -> None:
    from tests.test_bad_input import run_expecting_error

    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", f"--model.class_weights={weights}")
    assert "--model.class_weights" in err and said in err
    assert not Path("logs").exists()


def test_the_balanced_sampler_draws_classes_equally_and_deterministically() -> None:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    sampler = BalancedSampler(labels, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert len(first) == len(labels)
    shares = torch.bincount(labels[first], minlength=3) / len(first)
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.05)
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new draw each epoch
    resumed = BalancedSampler(labels, seed=3)  # a fresh process resuming at epoch 1 draws what epoch 1 drew
    resumed.set_epoch(1)
    assert list(resumed) == list(sampler)
    shards = []
    for rank in range(2):
        shard = BalancedSampler(labels, num_replicas=2, rank=rank, seed=3)
        shard.set_epoch(0)
        shards.append(list(shard))
    assert len(shards[0]) == len(shards[1]) == 500 and sorted(shards[0] + shards[1]) == sorted(first)


def test_a_balanced_sampler_fit_logs_the_balanced_scores(run_cli) -> None:
    cli = run_cli("fit", "cnn.yaml", *DATA, "--data.sampler=balanced", "--checkpoint.monitor=val/macro_f1",
                  "--trainer.max_epochs=2")  # fmt: skip
    loader = cli.trainer.train_dataloader
    assert isinstance(loader.sampler, BalancedSampler)  # Lightning kept it
    metrics = cli.trainer.callback_metrics
    assert {"val/balanced_acc", "val/macro_f1"} <= set(metrics)
    best = cli.trainer.checkpoint_callback
    assert best.monitor == "val/macro_f1" and float(best.best_model_score) == pytest.approx(
        float(metrics["val/macro_f1"]), abs=1.0
    )
    assert float(metrics["val/balanced_acc"]) > 0.5  # learnt, rare classes included (chance: 0.1)


def test_balanced_weights_of_counts() -> None:
    weights = balanced_weights(torch.tensor([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 4 / 2])
