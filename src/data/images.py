"""Image files in, uint8 tensors out: the one decoder and file dataset of image folders, predict and the Python API.

Every PIL mode becomes grey or RGB as PIL converts it, after EXIF orientation; 16-bit grey is scaled to 8 bits
instead of being clipped at 255 (what ``convert("L")`` does to an ``I;16`` PNG).
"""

import glob
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import v2

from src.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def to_rgb_or_grey(image: Image.Image, channels: int) -> Image.Image:
    """``image`` upright (EXIF orientation) in mode ``L`` (channels=1) or ``RGB`` (channels=3)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit grey (PNG loads as I;16 or I)
        pixels = np.asarray(image, dtype=np.float64) * (255 / 65535)
        image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":  # 32-bit float: taken as [0, 1]
        image = Image.fromarray((np.clip(np.asarray(image), 0, 1) * 255 + 0.5).astype(np.uint8), mode="L")
    return image.convert("L" if channels == 1 else "RGB")


def pil_to_uint8(image: Image.Image, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """A PIL image as a uint8 (channels, *size) tensor (antialiased resize; ``size=None`` keeps its size)."""
    tensor = v2.functional.pil_to_tensor(to_rgb_or_grey(image, channels))
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = v2.functional.resize(tensor, list(size), antialias=True)
    return tensor


def read_image(path: Path | str, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """One image file as a uint8 (channels, H, W) tensor; PIL's ``OSError`` for unreadable files."""
    with Image.open(path) as image:
        return pil_to_uint8(image, channels, size)


def find_images(path: str | Path) -> list[Path]:
    """Image files at ``path``: one file, a folder (searched recursively) or a glob pattern, in sorted order.

    Files whose extension is not an image's are skipped with one warning listing them; nothing found is an error.
    """
    text = str(path)
    if any(ch in text for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(text, recursive=True)]
    elif Path(text).is_dir():
        candidates = [p for p in Path(text).rglob("*")]
    elif Path(text).is_file():
        if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{text} is not an image file (extensions: {', '.join(IMAGE_SUFFIXES)}).")
        return [Path(text)]
    else:
        raise UserError(f"--data.path {text}: no such file or folder. Give an image, a folder or a glob ('x/*.png').")
    files = sorted(p for p in candidates if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        shown = ", ".join(str(p) for p in skipped[:10]) + more
        rank_zero_warn(f"skipping {len(skipped)} file(s) that are not images: {shown}")
    if not images:
        raise UserError(f"--data.path {text}: no image files found ({', '.join(IMAGE_SUFFIXES)}).")
    return images


def unreadable(path: Path, err: OSError, skip: bool = False, fix: str = "Remove it or fix it.") -> None:
    """Stop naming the file and its fix, or (``skip``) warn and carry on without it."""
    if not skip:
        raise UserError(f"cannot read image {path} ({err}). {fix}")
    warnings.warn(f"skipping unreadable image {path}", stacklevel=3)


def readable(paths: list[Path], skip: bool = False, fix: str = "Remove it or fix it.") -> list[int]:
    """Positions of the files whose header opens (cheap): an unreadable image stops the run before any work."""
    kept = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path):
                kept.append(i)
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError
            unreadable(path, err, skip, fix)
    return kept


class ImageFiles(Dataset):
    """Image files decoded one at a time (in DataLoader workers) at the given channels and size: ``(image,
    label)`` with labels (training), ``{"image": image, "index": position in the list}`` without (prediction)."""

    def __init__(
        self, paths: list[Path], channels: int, size: tuple[int, int], labels: torch.Tensor | None = None
    ) -> None:
        self.paths, self.channels, self.size, self.labels = paths, channels, size, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        path = self.paths[index]
        try:
            image = read_image(path, self.channels, self.size)
        except OSError as err:  # a truncated file passes the header check and is only found here
            unreadable(path, err)
        return {"image": image, "index": torch.tensor(index)} if self.labels is None else (image, self.labels[index])
