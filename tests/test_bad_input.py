"""User mistakes: one clear line naming the bad value, a non-zero exit, no traceback, nothing overwritten."""

from pathlib import Path

import pytest

from tests.conftest import CONFIGS


def run_expecting_error(run_cli, capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 12, f"expected a short message, got:\n{err}"  # not the ~150 options
    return err


def test_unknown_config_key(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", "--model.hiden_size=3")
    assert "hiden_size" in err
    assert not (tmp_path / "logs").exists()


def test_wrong_type(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", "--trainer.max_epochs=many")
    assert "max_epochs" in err and "many" in err
    assert not (tmp_path / "logs").exists()


def test_missing_checkpoint(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(run_cli, capsys, "test", "cnn.yaml", "--ckpt_path=logs/nope/best.ckpt")
    assert err.count("\n") == 1
    assert "checkpoint not found: --ckpt_path logs/nope/best.ckpt" in err
    assert not (tmp_path / "logs").exists()


def test_file_that_is_not_a_checkpoint(run_cli, capsys, tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    err = run_expecting_error(run_cli, capsys, "predict", "cnn.yaml", "--ckpt_path=notes.ckpt")
    assert "--ckpt_path notes.ckpt is not a checkpoint" in err
    assert not (tmp_path / "logs").exists()


def test_data_dir_without_dataset_and_no_download(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(
        run_cli,
        capsys,
        "fit",
        "cnn.yaml",
        "--data",
        str(CONFIGS / "data" / "fashion_mnist.yaml"),
        "--data.data_dir=nowhere",
        "--data.download=false",
    )
    assert err.count("\n") == 1
    assert "data_dir='nowhere'" in err and "--data.data_dir" in err
    assert not (tmp_path / "logs").exists()


def test_checkpoint_for_other_classes(run_cli, capsys, fake_fashion_mnist: Path, tmp_path: Path) -> None:
    cli = run_cli(
        "fit", "cnn.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"
    )
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    before = sorted((tmp_path / "logs").rglob("*"))
    err = run_expecting_error(
        run_cli,
        capsys,
        "test",
        "cnn.yaml",
        "--data",
        str(CONFIGS / "data" / "fashion_mnist.yaml"),
        f"--data.data_dir={fake_fashion_mnist}",
        f"--ckpt_path={last}",
    )
    assert "trained on classes ['0', '1'" in err and "T-shirt/top" in err
    assert sorted((tmp_path / "logs").rglob("*")) == before


def test_lr_multiplier_for_a_layer_that_does_not_exist(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", "--model.lr_multipliers={backbone: 0.1}")
    assert "prefix ['backbone'] matches no parameter" in err and "features.0" in err
    assert not (tmp_path / "logs").exists()


def test_bad_value_raised_while_building_the_data_is_one_line(run_cli, capsys, tmp_path: Path) -> None:
    err = run_expecting_error(run_cli, capsys, "fit", "cnn.yaml", "--data.val_split=2")
    assert err.count("\n") == 1 and "--data.val_split 2.0 must be between 0 and 1" in err
    assert not (tmp_path / "logs").exists()
