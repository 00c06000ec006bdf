"""Networks, and the contract every network keeps: a plain ``nn.Module``, ``__init__(input_shape, num_classes,
**yaml_args)`` ((C, H, W) and the class count from the data), ``forward``: a normalised float (N, C, H, W) batch ->
(N, num_classes) logits. Optional attributes (absent or ``None``: the default; ``check_network`` refuses a wrong kind):
``input_spec``, the ``InputSpec`` pretrained weights expect (default: the data's); ``backbone``, the pretrained part
(finetuning freezes it, ``lr_multipliers`` can name it, weight init skips it); ``restore_args()``, init arguments that
rebuild it without weight files; ``features``, what transfer reuses (default: all but the last ``nn.Linear``)."""

import itertools
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from src.errors import UserError
from src.models.preprocess import InputSpec

#: A network class (or factory) called as ``network(input_shape, num_classes)``; YAML gives its other arguments.
NetworkFactory = Callable[[tuple[int, int, int], int], nn.Module]
InitScheme = Literal["default", "kaiming", "xavier"]
#: kaiming (He) suits ReLU networks, xavier (Glorot) tanh/sigmoid ones; default keeps PyTorch's.
INITS = {"kaiming": partial(nn.init.kaiming_normal_, nonlinearity="relu"), "xavier": nn.init.xavier_uniform_}


def check_network(net: Any) -> nn.Module:
    """``net`` when it keeps the contract; otherwise one line naming what is wrong."""
    if not isinstance(net, nn.Module):
        raise UserError(f"--model.network built a {type(net).__name__}, not an nn.Module: see src/models/networks.py")
    for name, kind in {"input_spec": InputSpec, "backbone": nn.Module, "restore_args": Callable}.items():
        value = getattr(net, name, None)
        if value is not None and not isinstance(value, kind):
            raise UserError(
                f"--model.network {type(net).__name__}: attribute {name} is a {type(value).__name__}, it must be a "
                f"{kind.__name__} or absent (see src/models/networks.py)"
            )
    return net


def init_weights(net: nn.Module, scheme: InitScheme = "default") -> None:
    """Re-initialise every Conv/Linear layer outside ``net.backbone`` in place (``INITS``), biases to zero."""
    if scheme == "default":
        return
    if scheme not in INITS:
        raise ValueError(f"unknown init scheme {scheme!r}: use 'default', 'kaiming' or 'xavier'")
    backbone = getattr(net, "backbone", None)
    pretrained = {id(m) for m in backbone.modules()} if isinstance(backbone, nn.Module) else set()
    for layer in net.modules():
        if id(layer) not in pretrained and isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            INITS[scheme](layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def param_groups(net: nn.Module, lr_multipliers: dict[str, float], decay_all: bool = True) -> list[dict]:
    """Optimiser groups by ``lr_multipliers`` prefix (``backbone``: 0.1, kept as ``lr_multiplier``), the rest
    ``default``; without ``decay_all``, 1-D parameters (BatchNorm, biases) get no weight decay (it fights the norm)."""
    groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in lr_multipliers} | {"default": []}
    for name, param in net.named_parameters():
        groups[next((p for p in lr_multipliers if name == p or name.startswith(p + ".")), "default")].append(param)
    if unused := [p for p in lr_multipliers if not groups[p]]:
        names = sorted(n for n, m in net.named_modules() if n and any(True for _ in m.parameters()))
        raise UserError(f"--model.lr_multipliers: prefix {unused} matches no parameter; use one of {names}")
    if not lr_multipliers and decay_all:
        return [{"params": groups["default"]}]  # one unnamed group: LearningRateMonitor logs ``lr-<Optimizer>``
    out = []
    for prefix, params in groups.items():
        group = {"name": prefix, "lr_multiplier": lr_multipliers.get(prefix, 1.0)}
        out.append({**group, "params": [p for p in params if decay_all or p.ndim > 1]})
        no_decay = [p for p in params if not (decay_all or p.ndim > 1)]
        out.append({**group, "params": no_decay, "name": f"{prefix}/no_decay", "weight_decay": 0.0})
    return [g for g in out if g["params"]]


def flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    """``features``' output size for one image: a dry run in eval mode (BatchNorm needs no batch), then train mode."""
    with torch.no_grad():
        size = features.eval()(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    features.train()
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
        widths = [int(torch.tensor(input_shape).prod()), *hidden_sizes]
        for width, size in itertools.pairwise(widths):
            layers += [nn.Linear(width, size), *([nn.BatchNorm1d(size)] if batch_norm else [])]
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvNet(nn.Module):
    """``features`` (what transfer learning reuses) → ``classifier``, which a subclass builds on ``flat_size``."""

    def __init__(self, input_shape: Sequence[int], features: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*features)
        self.flat_size = flat_size(self.features, input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SimpleCNN(ConvNet):
    """The classic CNN: conv5x5 → ReLU → maxpool → conv3x3 → ReLU → FC → ReLU → FC; padded, so inputs from 4x4 up."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        dropout: float = 0.25,
        batch_norm: bool = False,
    ) -> None:
        """``channels`` of the convolutions (``batch_norm`` after each), ``dropout`` before each FC layer."""
        (c1, c2), norm = channels, (nn.BatchNorm2d if batch_norm else lambda c: nn.Identity())
        features = [nn.Conv2d(input_shape[0], c1, 5, padding=2), norm(c1), nn.ReLU(True), nn.MaxPool2d(2)]
        super().__init__(input_shape, [*features, nn.Conv2d(c1, c2, 3, padding=1), norm(c2), nn.ReLU(True)])
        fc = [nn.Flatten(), nn.Dropout(dropout), nn.Linear(self.flat_size, hidden_size), nn.ReLU(True)]
        self.classifier = nn.Sequential(*fc, nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))


class LeNet5(ConvNet):
    """LeNet-5 variant: [conv5x5 → ReLU → maxpool] x 2 → FC 120 → FC 84 → FC; padded, so inputs from 4x4 up."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        """``dropout`` before the first two fully connected layers."""
        features = [nn.Conv2d(input_shape[0], 6, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(2)]
        super().__init__(input_shape, [*features, nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(2)])
        fc = [nn.Flatten(), nn.Dropout(dropout), nn.Linear(self.flat_size, 120), nn.ReLU(True), nn.Dropout(dropout)]
        self.classifier = nn.Sequential(*fc, nn.Linear(120, 84), nn.ReLU(True), nn.Linear(84, num_classes))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own shift.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (He et al., 2016): ReLU(x + BN(conv(ReLU(BN(conv(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels)[:2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResNet(ConvNet):
    """Stages of [conv3x3 → maxpool 2 → BatchNorm → ReLU] + residual blocks, then a head; BatchNorm everywhere lets
    it train at large learning rates (OneCycle). Each stage halves the size down to 1 px; blocks (0, 1, 1): ResNet-9."""

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
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} needs one entry per stage of widths {list(widths)}")
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for width, depth in zip(widths, blocks, strict=True):
            conv, norm, relu = _conv_bn_relu(channels, width)
            # Pool first: max-pool commutes with ReLU and BatchNorm (positive scale): same function, 1/4 the BN work.
            pool, size = ([nn.MaxPool2d(2)], size // 2) if size >= 2 else ([], size)
            layers += [conv, *pool, norm, relu, *(ResidualBlock(width) for _ in range(depth))]
            channels = width
        super().__init__(input_shape, [*layers, *([nn.AdaptiveMaxPool2d(1)] if global_pool else [])])
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden_size:
            head += [nn.Linear(self.flat_size, hidden_size, bias=False), nn.BatchNorm1d(hidden_size), nn.ReLU(True)]
        self.classifier = nn.Sequential(*head, nn.Linear(hidden_size or self.flat_size, num_classes))
