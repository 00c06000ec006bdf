"""A checkpoint is the model: evaluated offline without its pretrained weights file, and with its own statistics."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import CONFIGS

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
TRANSFER = ["--model.network.input_size=16", "--finetuning.strategy=freeze"]  # 16 px: ResNet-18 still runs, cheaply


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty torch hub cache, and any attempt to fetch weights fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("restoring a checkpoint must not fetch weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)


def evaluate_without(weights: Path, cli, run_cli) -> None:
    """Delete ``weights``, then test and predict the run's last checkpoint with the run's own config."""
    run_dir = Path(cli.trainer.log_dir).resolve()
    last = run_dir / "checkpoints" / "last.ckpt"
    trained = {k: v.clone() for k, v in cli.model.state_dict().items()}
    weights.unlink()
    tested = run_cli("test", str(run_dir / "config.yaml"), f"--ckpt_path={last}")
    for key, value in tested.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert "test/acc" in tested.trainer.callback_metrics
    run_cli("predict", str(run_dir / "config.yaml"), f"--ckpt_path={last}")
    assert (run_dir / "predictions.csv").is_file()


def test_transfer_from_a_local_state_dict_evaluates_offline_after_the_file_is_gone(run_cli, tmp_path, offline) -> None:
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    cli = run_cli("fit", "transfer.yaml", *SHORT, *TRANSFER, f"--model.network.weights={weights}")
    evaluate_without(weights, cli, run_cli)


def test_transfer_from_a_template_checkpoint_evaluates_after_the_file_is_gone(run_cli, tmp_path, offline) -> None:
    source = run_cli("fit", "cnn.yaml", *SHORT)
    weights = tmp_path / "source.ckpt"
    (Path(source.trainer.log_dir) / "checkpoints" / "last.ckpt").rename(weights)
    cli = run_cli("fit", "transfer.yaml", *SHORT, "--finetuning.strategy=freeze", f"--model.network.weights={weights}",
                  "--model.network.input_size=null")  # fmt: skip
    assert cli.model.preprocess.size == (8, 8)  # the source CNN's input size and statistics
    evaluate_without(weights, cli, run_cli)


def brighter_folder(root: Path, target: Path) -> None:
    """The same classes as ``root``, every image brighter: other statistics if measured again."""
    from PIL import Image

    for path in root.rglob("*.*"):
        out = target / path.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(Image.open(path)).astype(np.float32)
        Image.fromarray(np.clip(pixels * 0.5 + 120, 0, 255).astype(np.uint8)).save(out)


@pytest.mark.parametrize("source", ["image_folder", "arrays"])
def test_checkpoints_keep_their_statistics_on_other_data(
    run_cli, source: str, image_folder: Path, array_file: Path, tmp_path: Path
) -> None:
    if source == "image_folder":
        other = tmp_path / "other_images"
        brighter_folder(image_folder, other)
        first, then = f"--data.data_dir={image_folder}", f"--data.data_dir={other}"
    else:
        arrays = dict(np.load(array_file))
        arrays["images"] = (arrays["images"] * 0.5 + 120).astype(np.uint8)
        np.savez(tmp_path / "other.npz", **arrays)
        first, then = f"--data.path={array_file}", f"--data.path={tmp_path / 'other.npz'}"
    data = ["--data", str(CONFIGS / "data" / f"{source}.yaml"), "--data.batch_size=8"]
    cli = run_cli("fit", "cnn.yaml", *data, first, *SHORT)
    trained_mean, trained_std = cli.model.preprocess.mean.clone(), cli.model.preprocess.std.clone()
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"

    tested = run_cli("test", "cnn.yaml", *data, then, f"--ckpt_path={last}")
    assert not torch.allclose(torch.tensor(tested.datamodule.mean), trained_mean.flatten(), atol=0.05)
    assert torch.equal(tested.model.preprocess.mean, trained_mean)  # the model's normalisation is unchanged
    assert torch.equal(tested.model.preprocess.std, trained_std)
    assert tested.model.hparams.input_mean == cli.model.hparams.input_mean


def handmade_checkpoint(path: Path, network: dict) -> Path:
    """A checkpoint as ``fit`` writes one (hyper-parameters as LightningCLI saves them), with ``network`` in it."""
    from src.models.classifier import ImageClassifier

    model = ImageClassifier([str(d) for d in range(10)], (1, 8, 8))
    hparams = {"class_names": model.class_names, "input_shape": (1, 8, 8), "network": network,
               "_instantiator": "lightning.pytorch.cli.instantiate_module"}  # fmt: skip
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return path


def test_a_tampered_checkpoint_is_one_line_naming_the_checkpoint_and_the_key(tmp_path: Path, capsys) -> None:
    from src.errors import UserError
    from src.predict import Predictor

    cnn = {"class_path": "src.models.networks.SimpleCNN", "init_args": {}}
    good = handmade_checkpoint(tmp_path / "good.ckpt", cnn)
    assert Predictor.from_checkpoint(good).predict(torch.zeros(1, 8, 8, dtype=torch.uint8), top_k=1)[0].label
    for network in ({"class_path": "builtins.print", "init_args": {}}, "builtins.print"):
        bad = handmade_checkpoint(tmp_path / "bad.ckpt", network)
        key = "network.class_path" if isinstance(network, dict) else "network"
        with pytest.raises(UserError, match=rf"^--ckpt_path {bad}: hyper-parameter {key} 'builtins.print' is not a "
                           r"network class \(nn.Module\)") as err:  # fmt: skip
            Predictor.from_checkpoint(bad)
        assert "\n" not in str(err.value)
    assert capsys.readouterr().out == ""  # nothing the checkpoint named was called
