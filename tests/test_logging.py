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


def test_dashboard_images_hparams_table_and_no_placeholders(run_cli) -> None:
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    cli = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=2", "--trainer.limit_train_batches=5")
    run_dir = Path(cli.trainer.log_dir).resolve()
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    run_cli("test", str(run_dir / "config.yaml"), f"--ckpt_path={best}")  # into the same run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()

    images = set(events.Tags()["images"])
    expected = {"train/samples", "val/confusion_matrix", "val/mistakes", "test/confusion_matrix", "test/mistakes"}
    assert expected <= images, expected - images
    assert len(events.Images("val/confusion_matrix")) == 2  # one per validation epoch (not the sanity check)
    assert len(events.Images("train/samples")) == 1  # once per run
    assert events.Images("train/samples")[0].width > 400  # a real grid, not a thumbnail
    scalars = set(events.Tags()["scalars"])
    assert "test/acc" in scalars and "hp_metric" not in scalars and "epoch" not in scalars

    plugin = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/acc_best", "test/acc"}
    session = HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    hparams = dict(session.hparams)
    assert hparams["network"].string_value == "SimpleCNN"
    assert hparams["optimizer"].string_value == "Adam" and hparams["optimizer.lr"].number_value == 0.001
    assert hparams["data"].string_value == "DigitsDataModule" and hparams["data.batch_size"].number_value == 64
    assert not [k for k in hparams if k.startswith("_") or "instantiator" in k or "data_dir" in k]
