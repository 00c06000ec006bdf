"""The command line end to end: every config runs, the model learns, checkpoints and run directories behave."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import CONFIGS, ROOT

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
MODEL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))
#: Every data config that trains (files.yaml only predicts: tests/test_predict_files.py).
DATA_CONFIGS = sorted(p.name for p in (CONFIGS / "data").glob("*.yaml") if p.name != "files.yaml")


def best_and_last(run_dir: Path) -> tuple[Path, Path]:
    ckpts = run_dir / "checkpoints"
    return next(ckpts.glob("best-*.ckpt")), ckpts / "last.ckpt"


#: Offline and CPU-sized: no pretrained download, small inputs.
OFFLINE = {"transfer.yaml": ["--model.network.weights=null", "--model.network.input_size=16"]}


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_every_model_config_trains_a_few_batches(run_cli, config: str, tmp_path: Path) -> None:
    cli = run_cli("fit", config, *SHORT, *OFFLINE.get(config, []))
    assert cli.trainer.global_step == 3
    run_dir = Path(cli.trainer.log_dir)
    assert run_dir.resolve().parent.parent == (tmp_path / "logs").resolve()
    assert (run_dir / "config.yaml").is_file()
    assert all(p.is_file() for p in best_and_last(run_dir))


@pytest.mark.parametrize("model_config", ["cnn.yaml", "fast.yaml", "resnet.yaml"])
@pytest.mark.parametrize("data_config", DATA_CONFIGS)
def test_every_data_config_trains_a_few_batches(
    run_cli,
    data_config: str,
    model_config: str,
    fake_fashion_mnist: Path,
    fake_cifar10: Path,
    image_folder: Path,
    array_file: Path,
) -> None:
    where = {  # offline stand-ins generated in tmp_path
        "cifar10.yaml": f"--data.data_dir={fake_cifar10}",
        "fashion_mnist.yaml": f"--data.data_dir={fake_fashion_mnist}",
        "mnist.yaml": f"--data.data_dir={fake_fashion_mnist}",
        "image_folder.yaml": f"--data.data_dir={image_folder}",
        "arrays.yaml": f"--data.path={array_file}",
        "csv.yaml": f"--data.csv={image_folder.parent / 'labels.csv'}",
    }
    files = sorted(p for p in image_folder.rglob("*") if p.is_file())  # the image folder as a table
    rows = [f"{p.relative_to(image_folder.parent)},{p.parent.name}" for p in files]
    (image_folder.parent / "labels.csv").write_text("\n".join(["path,label", *rows]) + "\n")
    cli = run_cli(
        "fit", model_config, "--data", str(CONFIGS / "data" / data_config),
        *([where[data_config]] if data_config in where else []), "--data.batch_size=8", *SHORT,
    )  # fmt: skip
    assert cli.trainer.global_step == 3
    assert cli.model.hparams.class_names == cli.datamodule.class_names
    assert tuple(cli.model.hparams.input_shape) == cli.datamodule.input_shape
    # Augmentation is on where it helps (CIFAR-10's photos); digits must not be mirrored or rotated.
    assert cli.datamodule.augment.active == (data_config == "cifar10.yaml")


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_print_config_round_trips(config: str, capsys: pytest.CaptureFixture) -> None:
    from src.train import cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    scheduler = yaml.safe_load((CONFIGS / config).read_text())["model"]["scheduler"]["class_path"]
    assert printed["model"]["scheduler"]["class_path"] == scheduler
    assert printed["data"]["class_path"] == "src.data.digits.DigitsDataModule"
    assert printed["checkpoint"]["monitor"] == "val/acc"
    assert printed["trainer"]["accelerator"] == "auto"


def test_cnn_learns_digits_and_checkpoints_reproduce_it(run_cli) -> None:
    """Real learning: an untrained 10-class model scores about 0.1; three epochs must clear 0.9."""
    cli = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=3")
    best_score = cli.trainer.checkpoint_callback.best_model_score.item()
    assert best_score >= 0.9
    best, _ = best_and_last(Path(cli.trainer.log_dir))
    hparams = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hparams["class_names"] == [str(d) for d in range(10)] and list(hparams["input_shape"]) == [1, 8, 8]

    # A new CLI process state, only the config and the checkpoint: the same val accuracy comes back.
    validated = run_cli("validate", "cnn.yaml", f"--ckpt_path={best}")
    assert validated.trainer.callback_metrics["val/acc"].item() == pytest.approx(best_score, abs=1e-6)
    tested = run_cli("test", "cnn.yaml", f"--ckpt_path={best}")
    assert tested.trainer.callback_metrics["test/acc"].item() >= 0.9


def test_last_ckpt_is_the_final_epoch_even_when_it_does_not_improve(run_cli) -> None:
    # lr drops to 0 after epoch 0, so epochs 1 and 2 cannot beat epoch 0: the best stays at epoch 0.
    cli = run_cli(
        "fit",
        "cnn.yaml",
        "--trainer.max_epochs=3",
        "--model.scheduler.milestones=[1]",
        "--model.scheduler.gamma=0.0",
    )
    best, last = best_and_last(Path(cli.trainer.log_dir))
    assert torch.load(best, weights_only=False)["epoch"] == 0
    assert torch.load(last, weights_only=False)["epoch"] == 2
    assert torch.load(last, weights_only=False)["global_step"] == cli.trainer.global_step


def test_runs_never_share_a_directory(run_cli) -> None:
    dirs = [Path(run_cli("fit", "fc.yaml", *SHORT).trainer.log_dir) for _ in range(2)]
    assert dirs[0] != dirs[1]
    assert all((d / "config.yaml").is_file() for d in dirs)


def test_predict_writes_named_top_k_predictions(run_cli) -> None:
    cli = run_cli("fit", "fc.yaml", *SHORT)
    _, last = best_and_last(Path(cli.trainer.log_dir))
    predicted = run_cli("predict", "fc.yaml", f"--ckpt_path={last}", "--predictions.top_k=2")
    lines = (Path(predicted.trainer.log_dir) / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,target,top1,top1_prob,top2,top2_prob"
    assert len(lines) - 1 == len(predicted.datamodule.test_set)
    rows = [line.split(",") for line in lines[1:]]
    names = predicted.datamodule.class_names
    assert {row[2] for row in rows} <= set(names) and {row[4] for row in rows} <= set(names)
    assert all(float(row[3]) >= float(row[5]) for row in rows)  # sorted by probability


def test_per_layer_learning_rates_from_the_command_line(run_cli) -> None:
    cli = run_cli("fit", "cnn.yaml", *SHORT, "--model.lr_multipliers={features: 0.1}")
    lrs = {g["name"]: g["lr"] for g in cli.trainer.optimizers[0].param_groups}
    assert lrs == pytest.approx({"features": 1e-4, "default": 1e-3})


def test_test_in_a_fresh_process_prints_per_class_table(run_cli, tmp_path: Path) -> None:
    cli = run_cli("fit", "cnn.yaml", *SHORT)
    run_dir = Path(cli.trainer.log_dir)
    best, _ = best_and_last(run_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            "test",
            "--config",
            str(run_dir / "config.yaml"),
            f"--ckpt_path={best}",
            "--trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in cli.datamodule.class_names:
        assert f"test/acc_per_class/{name}" in result.stdout
