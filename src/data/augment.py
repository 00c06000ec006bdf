"""Training-only batch augmentation with a random draw per image (torchvision's v2 transforms draw ONE per batch,
pytorch/vision#2929): crop, flip and rotation become one affine map per image, applied by a single ``grid_sample``."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2


class BatchAugment(nn.Module):
    """Like ``v2.RandomCrop(size, padding=crop_padding)`` (whole-pixel shifts, black fill), ``RandomHorizontalFlip``
    and ``v2.RandomRotation(rotation)`` (bilinear, black corners), per image. Returns float32 in [0, 1]."""

    def __init__(self, crop_padding: int = 0, hflip: bool = False, rotation: float = 0.0) -> None:
        super().__init__()
        self.crop_padding, self.hflip, self.rotation = crop_padding, hflip, rotation
        self.active = crop_padding > 0 or hflip or rotation > 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = v2.functional.to_dtype(images, torch.float32, scale=True)
        if not self.active:
            return images
        (n, _, h, w), device = images.shape, images.device
        # theta maps each output pixel to where it samples the input, in grid_sample's [-1, 1] coordinates:
        # rotation in pixel units (non-square images are not sheared), then the flip of the x axis.
        theta = torch.zeros(n, 2, 3, device=device)
        angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if self.hflip else 1.0
        theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h * flip, cos
        if self.crop_padding:
            shift = torch.randint(-self.crop_padding, self.crop_padding + 1, (n, 2), device=device)
            theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        mode = "bilinear" if self.rotation > 0 else "nearest"
        return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
