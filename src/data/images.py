"""Image files in, uint8 tensors out: one decoder for training folders, prediction on files and the Python API.

Every PIL mode becomes grey or RGB the way PIL itself converts (EXIF orientation applied first): palette and
RGBA images lose their alpha (as ``Image.convert("RGB")`` does), and 16-bit grey is scaled to 8 bits instead of
being clipped at 255 (what ``convert("L")`` would do to an ``I;16`` PNG).
"""

import glob
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageOps
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


def check_readable(paths: list[Path]) -> None:
    """Open every file's header (cheap) so an unreadable image stops the run before any work, naming the file."""
    for path in paths:
        try:
            with Image.open(path):
                pass
        except OSError as err:
            raise UserError(f"cannot read image {path} ({type(err).__name__}). Remove it or fix it.") from None
