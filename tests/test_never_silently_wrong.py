"""Never silently wrong: the order of --config and flags never matters, evaluations need a checkpoint, a run without
a logger still trains, and a checkpoint whose hyper-parameters do not parse is one line."""

import inspect
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from src.train import ClassifierCLI, config_files_first
from tests.conftest import CONFIGS

SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2"]


def one_error_line(capsys: pytest.CaptureFixture, run, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        run(*args)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def trained(run_cli) -> Path:
    """A 2-epoch CNN run on digits; its run directory."""
    return Path(run_cli("fit", "cnn.yaml", *SHORT).trainer.log_dir)


def test_flags_win_over_config_files_wherever_they_stand() -> None:
    argv = ["test", "--ckpt_path", "a.ckpt", "--trainer.max_epochs=3", "--config", "run/config.yaml",
            "--data", "configs/data/mnist.yaml", "--data.batch_size", "8"]  # fmt: skip
    files = ["test", "--config", "run/config.yaml", "--data", "configs/data/mnist.yaml"]
    assert config_files_first(argv) == [
        *files,
        "--ckpt_path",
        "a.ckpt",
        "--trainer.max_epochs=3",
        "--data.batch_size",
        "8",
    ]
    assert config_files_first(["fit", "--config=a.yaml", "--model.optimizer.lr", "-1"]) == [
        "fit", "--config=a.yaml", "--model.optimizer.lr", "-1"]  # fmt: skip


def test_a_flag_before_the_config_is_not_undone_by_it(run_cli) -> None:
    cli = run_cli("fit", "", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--config",
                  str(CONFIGS / "cnn.yaml"), "--trainer.limit_val_batches=1")  # fmt: skip
    assert cli.trainer.max_epochs == 1 and cli.trainer.current_epoch == 1  # cnn.yaml says 12


def test_test_gives_the_same_result_whatever_the_order(run_cli, trained: Path, capsys) -> None:
    best = next((trained / "checkpoints").glob("best-*.ckpt"))
    config = str(trained / "config.yaml")
    after = run_cli("test", config, f"--ckpt_path={best}").trainer.callback_metrics["test/acc"]
    before = run_cli("test", "", f"--ckpt_path={best}", "--config", config).trainer.callback_metrics["test/acc"]
    assert float(before) == float(after) > 0.5  # a trained network, not random weights (0.1)
    assert sorted(p.name for p in trained.parent.iterdir()) == [trained.name]  # into the same run, no new version
    assert json.loads((trained / "test_report.json").read_text())["accuracy"] == pytest.approx(float(after))


def test_resume_with_the_checkpoint_before_the_config_continues_the_run(run_cli, trained: Path) -> None:
    last = trained / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=True)["global_step"]
    cli = run_cli("fit", "", f"--ckpt_path={last}", "--config", str(trained / "config.yaml"),
                  "--trainer.max_epochs=3")  # fmt: skip
    assert Path(cli.trainer.log_dir) == trained and cli.trainer.global_step == steps + 4  # one more epoch
    for saved in trained.glob("*config.yaml"):  # no saved config names a checkpoint
        assert "ckpt_path: null" in saved.read_text(), saved


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(run_cli, capsys, tmp_path: Path, subcommand: str) -> None:
    line = one_error_line(capsys, run_cli, subcommand, "cnn.yaml")
    assert f"`{subcommand}` evaluates a trained model: pass --ckpt_path" in line
    assert not (tmp_path / "logs").exists()


def test_an_untrained_baseline_is_explicit_and_says_so(run_cli, capsys) -> None:
    cli = run_cli("validate", "cnn.yaml", "--untrained=true")
    assert "validate of an UNTRAINED network" in capsys.readouterr().out
    assert float(cli.trainer.callback_metrics["val/acc"]) < 0.5  # what random weights give: not a trained model
    line = one_error_line(capsys, run_cli, "fit", "cnn.yaml", "--untrained=true")
    assert "--untrained true evaluates initial weights" in line


def test_fit_without_a_logger_trains_into_a_run_directory(run_cli, tmp_path: Path) -> None:
    cli = run_cli("fit", "cnn.yaml", "--trainer.logger=false", *SHORT)
    run_dir = Path(cli.trainer.log_dir)
    assert cli.trainer.global_step == 8 and run_dir == Path("logs/no_logger/version_0")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    again = run_cli("fit", "cnn.yaml", "--trainer.logger=false", *SHORT)  # a second run does not collide
    assert Path(again.trainer.log_dir) == Path("logs/no_logger/version_1")


def test_a_checkpoint_with_unparsable_hyper_parameters_is_one_line(run_cli, trained: Path, capsys) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["network"]["class_path"] = "builtins.print"
    torch.save(checkpoint, "tampered.ckpt")
    data = str(CONFIGS / "data" / "digits.yaml")
    line = one_error_line(capsys, run_cli, "test", "", "--ckpt_path=tampered.ckpt", "--data", data)
    assert "--ckpt_path tampered.ckpt" in line and "network.class_path 'builtins.print'" in line


def test_ckpt_hparams_adapter_still_matches_lightning() -> None:
    """Guards the ``_parse_ckpt_path`` adapter in src/train.py: LightningCLI must still call that method right after
    parsing (else the override is dead and Lightning reads the checkpoint a second time), and ours must do nothing."""
    source = inspect.getsource(LightningCLI.__init__)
    assert "self.parse_arguments(self.parser, args)\n        self._parse_ckpt_path()" in source
    assert ClassifierCLI._parse_ckpt_path is not LightningCLI._parse_ckpt_path
