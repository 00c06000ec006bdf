"""``python -m src.train lr_find``: Lightning's range test as a subcommand, a usable suggestion and its plot."""

import re
from pathlib import Path

import pytest
import yaml

from src.lr_find import BETA, debiased, steepest_descent

SUGGESTION = re.compile(
    r"suggested learning rate: (\S+),.*\((\d+) batches.*\n.*: (\S+lr_find\.png)\n.*fit .* (--\S+) (\S+)"
)


def run_lr_find(run_cli, capsys, config: str, *flags: str) -> re.Match:
    run_cli("lr_find", config, *flags)
    out = capsys.readouterr().out
    found = SUGGESTION.search(out)
    assert found, out
    return found


def test_lr_find_suggests_a_rate_to_paste_and_plots_it(run_cli, capsys, tmp_path: Path) -> None:
    found = run_lr_find(run_cli, capsys, "cnn.yaml", "--num_training", "80")
    lr, batches, plot, flag, value = found.groups()
    assert 1e-5 <= float(lr) <= 1, lr  # Lightning 2.6's own suggestion() gives 1.3e-7 here
    assert int(batches) <= 80
    assert flag == "--model.optimizer.init_args.lr" and float(value) == pytest.approx(float(lr), rel=1e-2)
    assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    run_dir = Path(plot).parent
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints").exists()  # nothing trained is kept
    assert not list(tmp_path.glob(".lr_find*")) and not list(run_dir.glob(".lr_find*"))  # staging file removed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    assert "lr_find" in events.Tags()["images"]
    # The printed flag is one the CLI accepts, and sets the optimiser's rate.
    with pytest.raises(SystemExit):
        run_cli("fit", "cnn.yaml", flag, value, "--print_config")
    assert yaml.safe_load(capsys.readouterr().out)["model"]["optimizer"]["init_args"]["lr"] == float(value)


def test_lr_find_on_a_one_epoch_one_cycle_recipe_runs_every_batch(run_cli, capsys) -> None:
    """fast.yaml trains one epoch (3 digits batches) with OneCycleLR: the test still takes all its batches, and
    the flag to paste is the schedule's peak rate (OneCycleLR ignores the optimiser's lr)."""
    found = run_lr_find(run_cli, capsys, "fast.yaml", "--num_training", "30", "--early_stop_threshold", "null")
    lr, batches, _, flag, _ = found.groups()
    assert int(batches) == 30 and 1e-5 <= float(lr) <= 1
    assert flag == "--model.scheduler.init_args.max_lr"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--min_lr", "1", "--max_lr", "0.1"],
            "--min_lr 1.0 and --max_lr 0.1: need 0 < min_lr < max_lr, e.g. 1e-8 and 1",
        ),
        (["--num_training", "0"], "--num_training 0: the test needs at least 20 batches, e.g. 100"),
    ],
)
def test_lr_find_refuses_bad_ranges_before_any_run_dir(run_cli, capsys, tmp_path: Path, flags, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("lr_find", "cnn.yaml", *flags)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "logs").exists()


def test_debiased_adapter_matches_lightnings_loss_record(tmp_path: Path) -> None:
    """Guards the ``debiased`` adapter: Lightning's real range test on a loss that is 2.0 whatever the rate. Its
    record starts near 1.0 (the off-by-one bias correction); debiased it reads 2.0 throughout. If Lightning fixes
    or changes its record, this fails, and ``src.lr_find.debiased`` must go."""
    import torch
    from lightning import LightningModule, Trainer
    from lightning.pytorch.tuner import Tuner
    from torch.utils.data import DataLoader, TensorDataset

    class Constant(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w * 0).sum() + 2.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(64, 1)), batch_size=1)

    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, max_epochs=1)  # fmt: skip
    finder = Tuner(trainer).lr_find(Constant(), num_training=30, early_stop_threshold=None, update_attr=False)
    recorded = finder.results["loss"]
    assert len(recorded) == 30
    assert recorded[0] == pytest.approx(2.0 * (1 - BETA) / (1 - BETA**2), abs=1e-4)  # 1.0101: half the loss
    assert debiased(recorded) == pytest.approx([2.0] * 30)


def test_steepest_descent_is_per_decade_and_before_the_minimum() -> None:
    """Flat with noise at tiny rates, a descent from 1e-4 to 1e-1, divergence after: the pick is in the descent."""
    lrs = [10 ** (-8 + 8 * i / 99) for i in range(100)]
    losses = []
    for i, lr in enumerate(lrs):
        noise = 0.01 * (-1) ** i
        if lr < 1e-4:
            losses.append(4.0 + noise)
        elif lr < 1e-1:
            losses.append(4.0 - 0.5 * (lr / 1e-4) ** 0.3 + noise)
        else:
            losses.append(10.0 * lr)
    best = steepest_descent(lrs, losses)
    assert best is not None and 1e-4 < lrs[best] < 1e-1
    assert steepest_descent(lrs[:12], losses[:12]) is None  # too few points after skipping the first ten
