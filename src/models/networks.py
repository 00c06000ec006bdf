"""Plain ``nn.Module`` networks: each only maps an image batch to logits.

Every network takes ``input_shape`` (C, H, W) and ``num_classes`` as its first two arguments. The classifier
module passes them from the data module, so a YAML only names the class and its own knobs.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: A network class (or factory) called as ``network(input_shape, num_classes)``; YAML gives its other arguments.
NetworkFactory = Callable[[tuple[int, int, int], int], nn.Module]


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of ``features``' output for one image, found by a dry run (works for any input size). In eval mode, so
    BatchNorm neither needs a batch nor counts the dry run in its running statistics."""
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
        """
        Args:
            input_shape: (channels, height, width) of one image, from the data module.
            num_classes: number of output logits, from the data module.
            hidden_sizes: width of each hidden layer.
            dropout: dropout probability after each hidden layer (active in train mode only).
            batch_norm: add BatchNorm1d before each ReLU.
        """
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SimpleCNN(nn.Module):
    """The classic two-convolution CNN: conv5x5 → ReLU → maxpool → conv3x3 → ReLU → FC → ReLU → FC.

    Convolutions are padded ("same"), so any input size of 4x4 or more works (8x8 digits, 28x28, 32x32 RGB).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        dropout: float = 0.25,
        batch_norm: bool = False,
    ) -> None:
        """
        Args:
            input_shape: (channels, height, width) of one image, from the data module.
            num_classes: number of output logits, from the data module.
            channels: output channels of the two convolutions.
            hidden_size: width of the hidden fully connected layer.
            dropout: dropout probability before each fully connected layer.
            batch_norm: add BatchNorm2d after each convolution.
        """
        super().__init__()
        c1, c2 = channels
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, kernel_size=5, padding=2),
            norm(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            norm(c2),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(_flat_size(self.features, input_shape), hidden_size),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 variant: [conv5x5 → ReLU → maxpool] x 2 → FC 120 → FC 84 → FC.

    Padded convolutions keep it valid for inputs from 4x4 up (the original needed 32x32).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        """
        Args:
            input_shape: (channels, height, width) of one image, from the data module.
            num_classes: number of output logits, from the data module.
            dropout: dropout probability before each fully connected layer.
        """
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(_flat_size(self.features, input_shape), 120),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (He et al., 2016): ReLU(x + BN(conv(ReLU(BN(conv(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels)[:2])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class ResNet(nn.Module):
    """A small modern conv net: stages of [conv3x3 → maxpool 2 → BatchNorm → ReLU] + residual blocks, then a head.

    BatchNorm everywhere is what lets it train fast at large learning rates (OneCycle). Each stage halves the
    size while it is 2 px or more, so 8x8 digits, 28x28 Fashion-MNIST, 32x32 CIFAR-10 and 64x64 images all work.
    ``blocks: [0, 0, 0]`` is a plain three-layer conv-BN net (``configs/fast.yaml``, and wider ``configs/resnet.yaml``);
    ``[0, 1, 1]`` with widths (32, 64, 128) is a ResNet-9-like net.
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
            input_shape: (channels, height, width) of one image, from the data module.
            num_classes: number of output logits, from the data module.
            widths: output channels of each stage.
            blocks: residual blocks after each stage's downsampling (same length as ``widths``; 0 = none).
            hidden_size: width of a hidden Linear → BatchNorm → ReLU layer before the output; 0 = none.
            global_pool: max-pool the last feature map to 1x1 (features independent of the input size) instead of
                flattening it (keeps where things are; better on small centred images like Fashion-MNIST).
            dropout: dropout probability before the output layer(s).
        """
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} needs one entry per stage of widths {list(widths)}")
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for width, depth in zip(widths, blocks, strict=True):
            conv, norm, relu = _conv_bn_relu(channels, width)
            # Pool before BatchNorm and ReLU (as airbench does): max-pooling commutes with ReLU, and with BatchNorm
            # while its scale is positive, so the function is (nearly) the same with 4x less normalising: ~1.5x
            # faster steps on a CPU.
            pool = [nn.MaxPool2d(2)] if size >= 2 else []
            size = size // 2 if size >= 2 else size
            layers += [conv, *pool, norm, relu, *(ResidualBlock(width) for _ in range(depth))]
            channels = width
        if global_pool:
            layers.append(nn.AdaptiveMaxPool2d(1))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        features = _flat_size(self.features, input_shape)
        if hidden_size:
            head += [nn.Linear(features, hidden_size, bias=False), nn.BatchNorm1d(hidden_size), nn.ReLU(inplace=True)]
            features = hidden_size
        self.classifier = nn.Sequential(*head, nn.Linear(features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
