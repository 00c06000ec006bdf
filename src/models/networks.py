"""Networks, and the contract every network keeps: a plain ``nn.Module`` that maps an image batch to logits.

- ``__init__(input_shape, num_classes, **yaml_args)``: (C, H, W) and the class count come from the data module;
  a YAML names only the class and its own arguments.
- ``forward(images) -> logits``: a normalised float (N, C, H, W) batch in, (N, num_classes) logits out.
- Optional attributes (``check_network`` refuses a wrong one in one line; absent or ``None``: the default):
  ``input_spec``, an ``InputSpec``: what pretrained weights expect (default: the data's channels, size, statistics);
  ``backbone``, a submodule of pretrained weights: finetuning freezes it, ``lr_multipliers`` can name it, weight init
  leaves it alone, everything else (the head) trains from scratch (default: none);
  ``restore_args()``, init arguments that rebuild the network without its weight files (default: its own);
  ``features``, an ``nn.Module`` of convolutional features that transfer learning reuses (default: the network but
  its last ``nn.Linear``).
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from src.errors import UserError
from src.models.preprocess import InputSpec

#: A network class (or factory) called as ``network(input_shape, num_classes)``; YAML gives its other arguments.
NetworkFactory = Callable[[tuple[int, int, int], int], nn.Module]
InitScheme = Literal["default", "kaiming", "xavier"]
#: The optional attributes ``check_network`` checks: what each must be.
OPTIONAL = {"input_spec": InputSpec, "backbone": nn.Module, "restore_args": Callable}


def check_network(net: Any, option: str = "--model.network") -> nn.Module:
    """``net`` when it keeps the contract; otherwise one line naming what is wrong."""
    if not isinstance(net, nn.Module):
        raise UserError(f"{option} built a {type(net).__name__}, not an nn.Module: see src/models/networks.py")
    for name, kind in OPTIONAL.items():
        value = getattr(net, name, None)
        if value is not None and not isinstance(value, kind):
            raise UserError(
                f"{option} {type(net).__name__}: attribute {name} is a {type(value).__name__}, it must be a "
                f"{kind.__name__} or absent (see src/models/networks.py)"
            )
    return net


def init_weights(net: nn.Module, scheme: InitScheme = "default") -> None:
    """Re-initialise every Conv/Linear layer of ``net`` outside its ``backbone`` in place; biases to zero.
    ``default`` keeps PyTorch's own; ``kaiming`` (He) suits ReLU networks, ``xavier`` (Glorot) tanh/sigmoid ones."""
    if scheme == "default":
        return
    if scheme not in ("kaiming", "xavier"):
        raise ValueError(f"unknown init scheme {scheme!r}: use 'default', 'kaiming' or 'xavier'")
    backbone = getattr(net, "backbone", None)
    pretrained = {id(m) for m in backbone.modules()} if isinstance(backbone, nn.Module) else set()
    for layer in net.modules():
        if id(layer) not in pretrained and isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def param_groups(net: nn.Module, lr_multipliers: dict[str, float], decay_all: bool = True) -> list[dict]:
    """Optimiser parameter groups: ``net``'s parameters by ``lr_multipliers`` prefix (``backbone``: 0.1), the rest
    ``default``; with ``decay_all`` False each group's 1-D parameters (BatchNorm, biases) get no weight decay
    (shrinking them only fights the norm). The multiplier travels as ``lr_multiplier`` in each group."""
    groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in lr_multipliers} | {"default": []}
    for name, param in net.named_parameters():
        groups[next((p for p in lr_multipliers if name == p or name.startswith(p + ".")), "default")].append(param)
    unused = [p for p in lr_multipliers if not groups[p]]
    if unused:
        parts = [n.split(".")[:-1] for n, _ in net.named_parameters()]
        names = sorted({".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)})
        raise UserError(f"--model.lr_multipliers: prefix {unused} matches no parameter; use one of {names}")
    if not lr_multipliers and decay_all:
        return [{"params": groups["default"]}]  # one unnamed group: LearningRateMonitor logs ``lr-<Optimizer>``
    out = []
    for prefix, params in groups.items():
        group = {"name": prefix, "lr_multiplier": lr_multipliers.get(prefix, 1.0)}
        if decay_all:
            out.append({"params": params, **group})
        else:
            out.append({"params": [p for p in params if p.ndim > 1], **group})
            kept = [p for p in params if p.ndim <= 1]
            out.append({"params": kept, **group, "name": f"{prefix}/no_decay", "weight_decay": 0.0})
    return [g for g in out if g["params"]]


def flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of ``features``' output for one image, by a dry run in eval mode (BatchNorm then needs no batch and
    keeps its statistics)."""
    training = features.training
    with torch.no_grad():
        size = features.eval()(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    features.train(training)
    return size


class FullyConnected(nn.Module):
    """Multi-layer perceptron on flattened pixels: [Linear → (BatchNorm) → ReLU → Dropout] x N → Linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        batch_norm: bool = False,
    ) -> None:
        """``hidden_sizes``: width of each hidden layer, ``dropout`` after each; ``batch_norm`` before each ReLU."""
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), *([nn.BatchNorm1d(size)] if batch_norm else [])]
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.layers = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SimpleCNN(nn.Module):
    """The classic two-convolution CNN: conv5x5 → ReLU → maxpool → conv3x3 → ReLU → FC → ReLU → FC.
    Padded ("same") convolutions: any input of 4x4 or more works (8x8 digits, 28x28, 32x32 RGB)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        dropout: float = 0.25,
        batch_norm: bool = False,
    ) -> None:
        """``channels`` of the two convolutions (``batch_norm`` after each), ``hidden_size`` of the hidden fully
        connected layer, ``dropout`` before each fully connected layer."""
        super().__init__()
        (c1, c2), norm = channels, (nn.BatchNorm2d if batch_norm else lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, kernel_size=5, padding=2), norm(c1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1), norm(c2), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat_size(self.features, input_shape), hidden_size),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden_size, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 variant: [conv5x5 → ReLU → maxpool] x 2 → FC 120 → FC 84 → FC; padded, so inputs from 4x4 up work."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        """``dropout`` before each fully connected layer."""
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat_size(self.features, input_shape), 120),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own shift.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (He et al., 2016): ReLU(x + BN(conv(ReLU(BN(conv(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels)[:2])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class ResNet(nn.Module):
    """A small modern conv net: stages of [conv3x3 → maxpool 2 → BatchNorm → ReLU] + residual blocks, then a head.

    BatchNorm everywhere lets it train at large learning rates (OneCycle). Each stage halves the size while it is
    2 px or more, so any input from 8x8 up works. ``blocks: [0, 0, 0]`` is a plain three-layer conv-BN net
    (``configs/fast.yaml``, ``configs/resnet.yaml``); ``[0, 1, 1]`` with widths (32, 64, 128) is ResNet-9-like.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        blocks: Sequence[int] = (0, 1, 1),
        hidden_size: int = 0,
        global_pool: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            widths: output channels of each stage.
            blocks: residual blocks after each stage's downsampling (one entry per stage; 0 = none).
            hidden_size: width of a hidden Linear → BatchNorm → ReLU layer before the output; 0 = none.
            global_pool: max-pool the last feature map to 1x1 (features independent of the input size) instead of
                flattening it (which keeps where things are: better on small centred images).
            dropout: dropout probability before the output layer(s).
        """
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} needs one entry per stage of widths {list(widths)}")
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for width, depth in zip(widths, blocks, strict=True):
            conv, norm, relu = _conv_bn_relu(channels, width)
            # Pool before BatchNorm and ReLU: max-pooling commutes with ReLU, and with BatchNorm while its scale is
            # positive, so the function is (nearly) the same with a quarter of the normalising work.
            pool = [nn.MaxPool2d(2)] if size >= 2 else []
            size = size // 2 if size >= 2 else size
            layers += [conv, *pool, norm, relu, *(ResidualBlock(width) for _ in range(depth))]
            channels = width
        self.features = nn.Sequential(*layers, *([nn.AdaptiveMaxPool2d(1)] if global_pool else []))
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        features = flat_size(self.features, input_shape)
        if hidden_size:
            head += [nn.Linear(features, hidden_size, bias=False), nn.BatchNorm1d(hidden_size), nn.ReLU(inplace=True)]
            features = hidden_size
        self.classifier = nn.Sequential(*head, nn.Linear(features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
