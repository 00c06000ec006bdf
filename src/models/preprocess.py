"""The model's input pipeline: raw pixels of any kind -> what the network was trained on. Its statistics are buffers
of the LightningModule, so a checkpoint alone turns images into class names (nothing re-derived from later data)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2


@dataclass
class InputSpec:
    """What a network expects: image channels, (height, width) and the normalisation statistics of [0, 1] pixels."""

    channels: int
    size: tuple[int, int]
    mean: Sequence[float]
    std: Sequence[float]


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) with any C -> ``channels``, as PIL converts: alpha dropped, grey repeated, RGB -> luma."""
    x = x[:, :-1] if x.shape[1] in (2, 4) else x  # grey + alpha, RGBA
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if channels == 1 and x.shape[1] == 3:
        if x.dtype == torch.uint8:  # PIL's exact integer formula for convert("L")
            r, g, b = x.int().unbind(1)
            return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1).to(torch.uint8)
        return (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")


class Preprocess(nn.Module):
    """uint8 or [0, 1] float images, a (N, C, H, W) batch or a list of (C, H, W), any channels and size -> the network's
    channels, size and normalisation, in the dtype of the ``mean``/``std`` buffers (which follow ``.half()``)."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.channels, self.size = spec.channels, tuple(spec.size)
        self.register_buffer("mean", torch.tensor(list(spec.mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(spec.std), dtype=torch.float32).view(1, -1, 1, 1))

    def pixels(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """[0, 1] float32 images at the network's channels and size (what the network sees, before normalising)."""
        if not isinstance(x, torch.Tensor):
            return torch.cat([self.pixels(image.unsqueeze(0)) for image in x])
        x = _to_channels(x, self.channels)
        if tuple(x.shape[-2:]) != self.size:
            x = v2.functional.resize(x, list(self.size), antialias=True)
        return v2.functional.to_dtype(x, torch.float32, scale=True)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.pixels(x).to(self.mean.device)
        return ((x - self.mean.float()) / self.std.float()).to(self.mean.dtype)
