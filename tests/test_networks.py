"""The networks map any image shape the data modules report to one logit per class."""

import pytest
import torch
from torch import nn

from src.models.networks import FullyConnected, LeNet5, ResNet, SimpleCNN, init_weights

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("network", [FullyConnected, SimpleCNN, LeNet5, ResNet])
@pytest.mark.parametrize("input_shape", SHAPES)
def test_logits_shape_for_every_input_size(network: type[nn.Module], input_shape: tuple[int, int, int]) -> None:
    net = network(input_shape, 7)
    out = net(torch.randn(5, *input_shape))
    assert out.shape == (5, 7)
    out.sum().backward()  # gradients reach every parameter
    assert all(p.grad is not None for p in net.parameters())


def test_cnn_is_the_classic_two_convolution_layout() -> None:
    net = SimpleCNN((1, 28, 28), 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3)]
    assert len(linears) == 2 and linears[-1].out_features == 10
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 1


def test_dropout_only_in_train_mode() -> None:
    net = FullyConnected((1, 8, 8), 10, dropout=0.5)
    x = torch.randn(16, 1, 8, 8)
    net.train()
    assert not torch.equal(net(x), net(x)), "dropout should make train-mode outputs random"
    net.eval()
    assert torch.equal(net(x), net(x)), "eval mode must be deterministic"


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
def test_init_schemes_reinitialise_weights_and_zero_biases(scheme: str) -> None:
    torch.manual_seed(0)
    net = SimpleCNN((1, 28, 28), 10)
    before = [p.clone() for p in net.parameters()]
    init_weights(net, scheme)  # type: ignore[arg-type]
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    fan_in = layers[-1].weight.shape[1]
    std = layers[-1].weight.std().item()
    expected = (2 / fan_in) ** 0.5 if scheme == "kaiming" else (2 / (fan_in + 10)) ** 0.5
    assert std == pytest.approx(expected, rel=0.2)


def test_unknown_init_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="orthogonal"):
        init_weights(SimpleCNN((1, 8, 8), 10), "orthogonal")  # type: ignore[arg-type]


def test_resnet_stages_blocks_and_pooling() -> None:
    net = ResNet((1, 8, 8), 10, widths=(8, 16, 32), blocks=(0, 1, 2))
    residual = [m for m in net.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(residual) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3  # 8 -> 4 -> 2 -> 1
    assert net.features(torch.zeros(2, 1, 8, 8)).shape == (2, 32, 1, 1)
    # Global pooling: the head's input no longer depends on the image size.
    pooled = [ResNet(shape, 10, widths=(8, 16), blocks=(0, 1), global_pool=True) for shape in SHAPES]
    assert {n.classifier[-1].in_features for n in pooled} == {16}
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet((1, 8, 8), 10, widths=(8, 16, 32), blocks=(0, 1))


class HalfThere(nn.Module):
    """A network whose optional attributes are set, but to the wrong kind of thing."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, attribute: str = "backbone") -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        setattr(self, attribute, "resnet18")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize("attribute", ["backbone", "input_spec", "restore_args"])
def test_a_half_there_network_attribute_is_one_line_naming_it(attribute: str) -> None:
    from functools import partial

    from src.errors import UserError
    from src.models.classifier import ImageClassifier

    with pytest.raises(UserError, match=rf"--model.network HalfThere: attribute {attribute} is a str, it must be") as e:
        ImageClassifier(["a", "b"], (1, 8, 8), network=partial(HalfThere, attribute=attribute))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"--model\.network built a function, not an nn\.Module"):
        ImageClassifier(["a", "b"], (1, 8, 8), network=lambda shape, n: lambda x: x)


class BackboneNoHead(nn.Module):
    """A network of the contract's optional ``backbone`` and its own output layer, with no ``head`` beside it."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        pixels = input_shape[0] * input_shape[1] * input_shape[2]
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 32), nn.ReLU())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.backbone(x))


def test_a_network_with_a_backbone_but_no_head_trains_with_its_backbone_frozen(run_cli) -> None:
    """``backbone`` alone is enough: ``lr_multipliers`` names it, finetuning freezes it, kaiming init runs beside it
    (only the last layer learns, so at a faster rate)."""
    overrides = ["--model.network=tests.test_networks.BackboneNoHead", "--model.init=kaiming", "--trainer.max_epochs=2",
                 "--model.lr_multipliers={backbone: 0.1}", "--finetuning.strategy=freeze",
                 "--model.optimizer.init_args.lr=0.05"]  # fmt: skip
    cli = run_cli("fit", "fc.yaml", *overrides)
    net = cli.model.net
    assert [g.get("name") for g in cli.trainer.optimizers[0].param_groups] == ["backbone", "default"]
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.out.parameters())
    assert float(cli.trainer.callback_metrics["val/acc"]) > 0.5  # on frozen random features; chance is 0.1
