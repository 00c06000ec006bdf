"""Transfer learning mechanics: what freezes when, learning-rate groups, and where backbone weights come from."""

from functools import partial
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from lightning import Callback, Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from src.data.digits import DigitsDataModule
from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.models.finetuning import TransferFinetuning
from src.models.transfer import TransferNet
from tests.conftest import CONFIGS

OFFLINE = ["--model.network.weights=null", "--model.network.input_size=16"]  # 16 px: ResNet-18 still runs, cheaply


def make_model(multiplier: float = 0.1) -> tuple[ImageClassifier, DigitsDataModule]:
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    network = partial(TransferNet, backbone="resnet18", weights=None, input_size=32)
    model = ImageClassifier(
        dm.class_names, dm.input_shape, dm.mean, dm.std, network=network, lr_multipliers={"backbone": multiplier}
    )
    return model, dm


class Snapshots(Callback):
    """Copies of the backbone's parameters after every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: ImageClassifier) -> None:
        self.epochs.append({k: v.detach().clone() for k, v in pl_module.net.backbone.named_parameters()})


def fit(model: ImageClassifier, dm: DigitsDataModule, epochs: int, **finetuning) -> Snapshots:
    snapshots = Snapshots()
    trainer = Trainer(
        max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[TransferFinetuning(**finetuning), snapshots],
    )  # fmt: skip
    trainer.fit(model, dm)
    return snapshots


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str = "") -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_freeze_trains_only_the_head() -> None:
    model, dm = make_model()
    backbone = {k: v.clone() for k, v in model.net.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.net.head.named_parameters()}
    fit(model, dm, epochs=2, strategy="freeze")
    after = model.net.backbone.state_dict()
    assert all(torch.equal(backbone[k], after[k]) for k in backbone), "backbone weights or BN statistics moved"
    assert changed(head, dict(model.net.head.named_parameters()))


def test_freeze_unfreeze_starts_training_the_backbone_at_the_given_epoch() -> None:
    model, dm = make_model()
    initial = {k: v.clone() for k, v in model.net.backbone.named_parameters()}
    snapshots = fit(model, dm, epochs=2, strategy="freeze_unfreeze", unfreeze_at_epoch=1)
    assert not changed(initial, snapshots.epochs[0]), "backbone must be frozen during epoch 0"
    assert changed(snapshots.epochs[0], snapshots.epochs[1]), "backbone must train from epoch 1"


def test_milestones_unfreeze_the_top_blocks_first_then_everything() -> None:
    model, dm = make_model()
    initial = {k: v.clone() for k, v in model.net.backbone.named_parameters()}
    snapshots = fit(model, dm, epochs=3, strategy="milestones", milestones=(1, 2), top_stages=1)
    assert not changed(initial, snapshots.epochs[0])
    assert changed(snapshots.epochs[0], snapshots.epochs[1], "layer4.")
    assert not changed(snapshots.epochs[0], snapshots.epochs[1], "layer1.")
    assert changed(snapshots.epochs[1], snapshots.epochs[2], "layer1.")


def test_backbone_learning_rate_is_the_head_rate_times_the_multiplier() -> None:
    model, _ = make_model(multiplier=0.25)
    optimizer = model.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "default"}
    assert groups["backbone"]["lr"] == pytest.approx(groups["default"]["lr"] * 0.25)
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in model.net.backbone.parameters()}
    assert {id(p) for p in groups["default"]["params"]} == {id(p) for p in model.net.head.parameters()}


def test_transfer_config_logs_one_learning_rate_per_group(run_cli) -> None:
    cli = run_cli("fit", "transfer.yaml", *OFFLINE, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                  "--trainer.limit_val_batches=1")  # fmt: skip
    lrs = {g["name"]: g["lr"] for g in cli.trainer.optimizers[0].param_groups}
    assert lrs == pytest.approx({"backbone": 1e-4, "default": 1e-3})
    events = EventAccumulator(cli.trainer.log_dir).Reload()
    assert events.Scalars("lr-Adam/backbone")[0].value == pytest.approx(1e-4)
    assert events.Scalars("lr-Adam/default")[0].value == pytest.approx(1e-3)


def test_torchvision_state_dict_file(tmp_path: Path) -> None:
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = TransferNet((3, 32, 32), 5, backbone="resnet18", weights=str(path), input_size=32)
    loaded = net.backbone.state_dict()
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert net.head[-1].out_features == 5


def test_state_dict_of_another_backbone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UserError, match="does not fit resnet34"):
        TransferNet((3, 32, 32), 5, backbone="resnet34", weights=str(path))


def test_features_from_a_cnn_checkpoint_of_this_template(run_cli) -> None:
    cli = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3")
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    # RGB 32x32 data on a grey 8x8 digits CNN: the model's preprocessing converts and resizes.
    model = ImageClassifier(list("abcd"), (3, 32, 32), network=partial(TransferNet, weights=str(ckpt)))
    backbone = model.net.backbone.state_dict()
    assert set(backbone) == {k.removeprefix("net.") for k in trained if k.startswith("net.features.")}
    assert all(torch.equal(backbone[k], trained[f"net.{k}"]) for k in backbone)  # the conv layers, as trained
    assert (model.preprocess.channels, model.preprocess.size) == (1, (8, 8))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_features_from_a_transfer_checkpoint_of_this_template(run_cli) -> None:
    cli = run_cli("fit", "transfer.yaml", *OFFLINE, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                  "--trainer.limit_val_batches=1")  # fmt: skip
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    net = TransferNet((1, 28, 28), 3, weights=str(ckpt))
    backbone = net.backbone.state_dict()
    assert all(torch.equal(backbone[k], trained[f"net.backbone.{k}"]) for k in backbone)
    assert net.input_spec.size == (16, 16)  # the input size it was trained at


def test_offline_default_weights_fail_before_training(
    run_cli, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))

    def no_network(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", str(CONFIGS / "transfer.yaml"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(tmp_path / "empty_cache" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err
    assert "--model.network.weights FILE" in err and "--model.network.weights null" in err
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet19"}, "'resnet19' is not a torchvision classification model"),
        ({"weights": "IMAGENET1K_V9"}, "'IMAGENET1K_V9' is not a weights name of resnet18: DEFAULT, IMAGENET1K_V1$"),
        ({"weights": "missing.pth"}, "checkpoint not found: --model.network.weights missing.pth"),
    ],
)
def test_bad_backbone_or_weights_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        TransferNet((3, 32, 32), 5, **kwargs)


def test_weight_init_never_touches_a_pretrained_backbone(tmp_path: Path) -> None:
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    network = partial(TransferNet, weights=str(path), input_size=32)
    model = ImageClassifier(["a", "b"], (3, 32, 32), network=network, init="kaiming")
    assert torch.equal(model.net.backbone.conv1.weight, source.conv1.weight)
    assert torch.count_nonzero(model.net.head[-1].bias) == 0  # the head was initialised by the chosen scheme


def test_cli_transfers_a_template_checkpoint_with_discriminative_lrs(run_cli) -> None:
    """The CLI path end to end: a CNN checkpoint as backbone, built inside the CLI's own model instantiation."""
    cnn = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3")
    ckpt = Path(cnn.trainer.log_dir) / "checkpoints" / "last.ckpt"
    cli = run_cli(
        "fit", "transfer.yaml", f"--model.network.weights={ckpt}", "--model.network.input_size=null",
        "--finetuning.strategy=freeze", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
    )  # fmt: skip
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    backbone = cli.model.net.backbone.state_dict()
    assert all(torch.equal(backbone[k], trained[f"net.{k}"]) for k in backbone)  # frozen, so still identical
    assert {g["name"] for g in cli.trainer.optimizers[0].param_groups} == {"backbone", "default"}


def test_input_pipeline_follows_the_weights_metadata() -> None:
    model = ImageClassifier(list("abc"), (1, 8, 8), network=partial(TransferNet, weights=None))
    reference = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert model.preprocess.size == (reference.crop_size[0],) * 2 == (224, 224)
    x = torch.rand(2, 1, 8, 8)
    adapted = model.preprocess(x)
    assert adapted.shape == (2, 3, 224, 224)  # grey -> RGB, 8x8 -> the weights' size
    resized = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    for c in range(3):
        expected = (resized[:, 0] - reference.mean[c]) / reference.std[c]
        assert torch.allclose(adapted[:, c], expected, atol=1e-5)
    small = ImageClassifier(list("abc"), (1, 8, 8), network=partial(TransferNet, weights=None, input_size=48))
    assert small.preprocess(x).shape == (2, 3, 48, 48)


def test_train_bn_lets_a_frozen_backbone_batchnorm_learn() -> None:
    model, dm = make_model()
    before = {k: v.clone() for k, v in model.net.backbone.named_parameters()}
    fit(model, dm, epochs=1, strategy="freeze", train_bn=True)
    after = dict(model.net.backbone.named_parameters())
    assert changed(before, after, "bn1.")
    assert not changed(before, after, "conv1.") and not changed(before, after, "layer4.0.conv1.")


@pytest.mark.parametrize(
    "backbone", ["resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"]
)
def test_every_documented_backbone_gets_a_new_head(backbone: str) -> None:
    net = TransferNet((1, 28, 28), 7, backbone=backbone, weights=None, input_size=64).eval()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in net.modules())


class BackboneWithoutHead(nn.Module):
    """The contract's minimum for finetuning: a ``backbone``, and no ``head`` (its output layer is ``out``)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.backbone(x))


def test_a_network_with_a_backbone_but_no_head_inits_and_finetunes_outside_the_backbone() -> None:
    dm = DigitsDataModule(batch_size=32)
    torch.manual_seed(0)
    reference = BackboneWithoutHead((1, 8, 8), 10)
    torch.manual_seed(0)
    model = ImageClassifier(dm.class_names, dm.input_shape, dm.mean, dm.std, network=BackboneWithoutHead,
                            init="kaiming", lr_multipliers={"backbone": 0.1})  # fmt: skip
    pairs = zip(reference.backbone.parameters(), model.net.backbone.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert torch.count_nonzero(model.net.out.bias) == 0  # initialised by the chosen scheme
    backbone = {k: v.clone() for k, v in model.net.backbone.state_dict().items()}
    out = {k: v.clone() for k, v in model.net.out.state_dict().items()}
    fit(model, dm, epochs=1, strategy="freeze")
    assert all(torch.equal(backbone[k], v) for k, v in model.net.backbone.state_dict().items())
    assert changed(out, model.net.out.state_dict())
