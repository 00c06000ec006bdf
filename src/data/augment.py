"""Training-only augmentation of whole batches on the batch's device, with its own random draw for every image.

torchvision's v2 transforms draw ONE set of random parameters for a whole (B, C, H, W) batch (pytorch/vision#2929):
every image would be flipped or shifted together. Here crop, flip and rotation become one affine map per image,
applied by a single ``grid_sample``: cheap on a CPU and a GPU, no per-sample Python loop.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2


class BatchAugment(nn.Module):
    """Random crop with zero padding, horizontal flip and rotation, drawn independently for every image.

    ``crop_padding=p`` equals ``v2.RandomCrop(size, padding=p)``: a random shift of ``-p..p`` whole pixels with a
    black fill (pixels copied exactly without rotation). ``rotation=d``: a uniform angle in ``[-d, d]`` degrees
    about the centre (bilinear, black corners), like ``v2.RandomRotation(d)``. uint8 or [0, 1] float batches in,
    float32 in [0, 1] out.
    """

    def __init__(self, crop_padding: int = 0, hflip: bool = False, rotation: float = 0.0) -> None:
        super().__init__()
        if crop_padding < 0 or rotation < 0:
            raise ValueError(f"crop_padding ({crop_padding}) and rotation ({rotation}) must be >= 0")
        self.crop_padding, self.hflip, self.rotation = crop_padding, hflip, rotation

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.rotation > 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = v2.functional.to_dtype(images, torch.float32, scale=True)
        if not self.active:
            return images
        n, _, h, w = images.shape
        device = images.device
        # theta maps each output pixel to where it samples the input, in grid_sample's [-1, 1] coordinates.
        theta = torch.zeros(n, 2, 3, device=device)
        angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        flip = torch.ones(n, device=device)
        if self.hflip:
            flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
        # Rotation in pixel units (so non-square images are not sheared), then the flip of the x axis.
        theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h * flip, cos
        if self.crop_padding:
            shift = torch.randint(-self.crop_padding, self.crop_padding + 1, (n, 2), device=device)
            theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        mode = "bilinear" if self.rotation > 0 else "nearest"
        return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        return f"crop_padding={self.crop_padding}, hflip={self.hflip}, rotation={self.rotation}"
