"""TensorBoard gets what a user looks for: train/val loss, accuracy, per-class accuracy, learning rate."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_event_files_hold_losses_accuracies_and_learning_rate(run_cli) -> None:
    cli = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=2", "--trainer.limit_train_batches=5")
    events = EventAccumulator(str(Path(cli.trainer.log_dir))).Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr-Adam"}
    expected |= {f"val/acc_per_class/{name}" for name in cli.datamodule.class_names}
    assert expected <= tags, expected - tags
    assert [e.step for e in events.Scalars("val/acc")] == [4, 9]  # one point per epoch
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("val/acc_per_class/3"))
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses[1] < losses[0]
    assert [e.value for e in events.Scalars("lr-Adam")] == pytest.approx([0.001, 0.001])


def test_learning_rate_schedule_and_groups_are_logged(run_cli) -> None:
    cli = run_cli(
        "fit",
        "cnn.yaml",
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--model.scheduler.milestones=[1, 2]",
        "--model.lr_multipliers={features: 0.5}",
    )
    events = EventAccumulator(str(Path(cli.trainer.log_dir))).Reload()
    base = [e.value for e in events.Scalars("lr-Adam/default")]
    features = [e.value for e in events.Scalars("lr-Adam/features")]
    assert base == pytest.approx([1e-3, 1e-4, 1e-5])
    assert features == pytest.approx([5e-4, 5e-5, 5e-6])
