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
    """Size of ``features``' output for one image, found by a dry run (works for any input size)."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).flatten(1).shape[1]


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
