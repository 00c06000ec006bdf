"""The modern recipe's knobs (fast.yaml, resnet.yaml) each do what they say, and the recipes learn."""

import inspect
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from src.data.base import TensorImages
from src.data.digits import DigitsDataModule
from src.models.classifier import ImageClassifier
from src.models.networks import ResNet
from src.train import cli_main
from tests.conftest import CONFIGS

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
DIGITS = {"class_names": [str(d) for d in range(10)], "input_shape": (1, 8, 8)}


def small_resnet(**kwargs) -> ImageClassifier:
    network = lambda shape, n: ResNet(shape, n, widths=(8, 16), blocks=(0, 1))  # noqa: E731
    return ImageClassifier(**DIGITS, network=network, **kwargs)


@pytest.mark.parametrize("config", ["fast.yaml", "resnet.yaml"])
def test_modern_recipes_learn_digits(run_cli, config: str) -> None:
    """Above 0.1 (chance) by far: the whole recipe (OneCycle per step, smoothing, BN) trains, not just runs."""
    epochs = {"fast.yaml": 2, "resnet.yaml": 3}[config]
    cli = run_cli("fit", config, f"--trainer.max_epochs={epochs}")
    assert cli.trainer.checkpoint_callback.best_model_score.item() >= 0.85
    # OneCycle spanned exactly the run: every optimiser step took one scheduler step, ending at the minimum lr.
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == cli.trainer.global_step == epochs * len(cli.datamodule.train_dataloader())
    assert scheduler.get_last_lr()[0] < scheduler.optimizer.param_groups[0]["max_lr"] / 100  # annealed to ~nothing


@pytest.mark.filterwarnings("ignore:A .OneCycleLR. scheduler is using")
def test_one_cycle_length_follows_the_trainer(run_cli) -> None:
    cli = run_cli(
        "fit", "fast.yaml", "--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"
    )
    assert cli.trainer.lr_scheduler_configs[0].scheduler.total_steps == 8 == cli.trainer.global_step
    assert cli.trainer.lr_scheduler_configs[0].interval == "step"
    epoch_cli = run_cli(
        "fit", "fast.yaml", *SHORT, "--trainer.max_epochs=3", "--model.scheduler_interval=epoch",
    )  # fmt: skip
    assert epoch_cli.trainer.lr_scheduler_configs[0].scheduler.total_steps == 3  # epochs, when stepped per epoch


def test_label_smoothing_is_the_loss_trained_on() -> None:
    logits, targets = torch.randn(6, 10), torch.arange(6)
    for loss in ("cross_entropy", "nll"):
        model = small_resnet(loss=loss, label_smoothing=0.2)
        out = F.log_softmax(logits, 1) if loss == "nll" else logits  # what the model's head returns
        expected = F.cross_entropy(logits, targets, label_smoothing=0.2)
        assert model.criterion(out, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    plain = small_resnet(loss="nll")
    assert plain.criterion(F.log_softmax(logits, 1), targets).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6
    )


def test_weight_decay_spares_norms_and_biases_only_when_asked() -> None:
    """One optimiser step with zero gradients: only weight decay moves parameters."""
    for decay_all in (True, False):
        model = small_resnet(
            optimizer=lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.5), decay_norms_and_biases=decay_all
        )
        for p in model.net.parameters():
            p.data.add_(1.0)  # BatchNorm biases start at 0, which decay could not move
            p.grad = torch.zeros_like(p)
        before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
        model.configure_optimizers()["optimizer"].step()
        for name, p in model.net.named_parameters():
            assert (not torch.equal(p, before[name])) == (decay_all or p.ndim > 1), (name, decay_all)
    assert {p.ndim > 1 for p in model.net.parameters()} == {True, False}  # both kinds were checked


def test_channels_last_gives_the_same_predictions() -> None:
    torch.manual_seed(0)
    plain = small_resnet().eval()
    fast = small_resnet(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    conv = next(m.weight for m in fast.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_flip_averaging_only_in_evaluation() -> None:
    torch.manual_seed(0)
    model = small_resnet(tta_hflip=True)
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    logits = model.net(model.preprocess(x))
    mirrored = model.net(model.preprocess(x.flip(-1)))
    torch.testing.assert_close(model(x), (logits + mirrored) / 2)
    torch.testing.assert_close(model(x), model(x.flip(-1)))  # an image and its mirror get the same answer
    model.train()
    torch.manual_seed(1)
    out = model(x)
    assert not torch.allclose(out, model(x.flip(-1)), atol=1e-3)  # training sees each image once, unaveraged


def test_ema_weights_are_validated_and_checkpointed(run_cli) -> None:
    """Lightning's EMAWeightAveraging from YAML: val/acc is the averaged model's, and so is the checkpoint."""
    cli = run_cli(
        "fit", "fast.yaml", "--trainer.max_epochs=2",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.decay=0.9",
    )  # fmt: skip
    best = cli.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, weights_only=False)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(averaged["net.features.0.weight"], current["net.features.0.weight"])
    validated = run_cli("validate", "fast.yaml", f"--ckpt_path={best}")
    assert validated.trainer.callback_metrics["val/acc"].item() == pytest.approx(
        cli.trainer.checkpoint_callback.best_model_score.item(), abs=1e-6
    )


def test_compiled_network_trains_and_saves_plain_parameter_names(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor (the default backend) really compiles the training and the validation graphs, of one small stage of
    the recipe's network. It trusts the CPU's reported vector instructions instead of first test-building each of them
    (a one-time probe per machine, cached with the compiled code, that was most of this test's time)."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "vec_isa_ok", True)
    counters.clear()
    one_stage = ["--model.network.init_args.widths=[8]", "--model.network.init_args.blocks=[0]"]
    cli = run_cli("fit", "fast.yaml", *SHORT, *one_stage, "--model.compile=true")
    assert cli.trainer.global_step == 3
    assert counters["stats"]["unique_graphs"] >= 2, "the training and the validation graphs compile"
    state = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)["state_dict"]
    assert "net.features.0.weight" in state and not any("_orig_mod" in k for k in state)


def test_in_memory_splits_are_indexed_on_the_training_device() -> None:
    """On an accelerator the split is copied there once and every batch is cut from that copy (no per-batch host
    copy). The meta device stands in for a GPU: batches come out on it without ever touching host memory."""
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    meta = torch.device("meta")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=meta), world_size=1, num_devices=1)
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, TensorImages) and loader.dataset.tensors[0].device == meta
    assert loader.dataset is dm.train_dataloader().dataset  # copied once, not per epoch
    images, labels = next(iter(loader))
    assert images.device == meta and labels.device == meta and images.shape == (16, 1, 8, 8)
    assert not loader.pin_memory
    assert dm.train_set.tensors[0].device.type == "cpu"  # the host split is kept for everything else
    dm.data_on_device = False
    assert dm.train_dataloader().dataset is dm.train_set


@pytest.mark.parametrize("config", ["fast.yaml", "resnet.yaml"])
def test_recipes_print_their_knobs(config: str, capsys: pytest.CaptureFixture) -> None:
    import yaml

    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]
    assert printed["scheduler"]["class_path"] == "torch.optim.lr_scheduler.OneCycleLR"
    assert printed["scheduler_interval"] == "step" and printed["label_smoothing"] == 0.1
    assert printed["channels_last"] is True and printed["decay_norms_and_biases"] is False
    # The network is what the YAML says plus ResNet's own defaults, not the default SimpleCNN's arguments
    # (jsonargparse carries a default class's init_args over to another class that accepts them).
    written = yaml.safe_load((CONFIGS / config).read_text())["model"]["network"]["init_args"]
    defaults = inspect.signature(ResNet).parameters
    for name, value in printed["network"]["init_args"].items():
        expected = written.get(name, defaults[name].default)
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name
