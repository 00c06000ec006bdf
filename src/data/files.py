"""Image files in, uint8 tensors out: the one decoder and file dataset of image folders, tables, predict, the Python
API and ``FilesDataModule`` (your own files, classified by a checkpoint)."""

import glob
import os
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from src.data.base import ImageDataModule, TensorImages, check_loader_args
from src.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def pil_to_uint8(image: Image.Image, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """A PIL image, upright (EXIF), as a uint8 (channels, *size) tensor; ``size=None`` keeps its size. 16-bit grey
    is scaled to 8 bits, not clipped at 255 as ``convert("L")`` does to an ``I;16`` PNG."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit grey (a PNG loads as I;16 or I), or [0, 1] floats
        scale = 255 if image.mode == "F" else 1 / 257
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) * scale + 0.5, 0, 255).astype(np.uint8))
    tensor = v2.functional.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = v2.functional.resize(tensor, list(size), antialias=True)
    return tensor


def read_image(path: Path | str, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """One image file as a uint8 (channels, H, W) tensor; PIL's ``OSError`` for unreadable files."""
    with Image.open(path) as image:
        return pil_to_uint8(image, channels, size)


def find_images(path: str | Path) -> list[Path]:
    """Image files at ``path``: one file, a folder (recursively, as glob's ``**``: hidden files left out) or a glob
    pattern, sorted; other files are skipped with one warning listing them."""
    text = str(path)
    if not any(ch in text for ch in "*?[") and not Path(text).exists():
        raise UserError(f"--data.path {text}: no such file or folder. Give an image, a folder or a glob ('x/*.png').")
    pattern = str(Path(text) / "**") if Path(text).is_dir() else text  # a file's own path matches just that file
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        listed = ", ".join(map(str, skipped[:10])) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        rank_zero_warn(f"skipping {len(skipped)} file(s) that are not images: {listed}")
    if not images:
        raise UserError(f"--data.path {text}: no image files found ({', '.join(IMAGE_SUFFIXES)}).")
    return images


def read_all(
    paths: list[Path], read: Callable | None = None, skip: bool = False, fix: str = "Remove it or fix it."
) -> tuple:
    """``(positions, results)`` of the files ``read`` reads; an unreadable one stops the run (or, ``skip``, warns).
    Without ``read``, only headers are opened: cheap, a non-image fails then (a truncated file only when decoded)."""
    kept, results = [], []
    for i, path in enumerate(paths):
        try:
            results.append(read(path) if read else Image.open(path).close())
            kept.append(i)
        except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            if not skip:
                raise UserError(f"cannot read image {path} ({err}). {fix}") from None
            warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
    return kept, results


class ImageFiles(Dataset):
    """Files decoded one at a time in DataLoader workers: ``(image, label)``, or without labels (prediction)
    ``{"image": image, "index": position in the list}``."""

    def __init__(
        self, paths: list[Path], channels: int, size: tuple[int, int], labels: torch.Tensor | None = None
    ) -> None:
        self.paths, self.channels, self.size, self.labels = paths, channels, size, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        _, [image] = read_all([self.paths[index]], lambda path: read_image(path, self.channels, self.size))
        return {"image": image, "index": torch.tensor(index)} if self.labels is None else (image, self.labels[index])


class LabelledFilesDataModule(ImageDataModule):
    """Labelled image files (class folders, a table): decoded once into memory when they fit, else streamed by
    DataLoader workers, the same batches either way. A subclass only lists its files: ``listed``."""

    def __init__(
        self,
        image_size: int = 32,
        grayscale: bool = False,
        test_split: float = 0.1,
        skip_corrupt: bool = False,
        in_memory: bool | Literal["auto"] = "auto",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            image_size: every image is resized to ``image_size`` x ``image_size``.
            grayscale: decode as one grey channel instead of RGB.
            test_split: without a given test split, the fraction held out as test (stratified by class).
            skip_corrupt: skip unreadable images with a warning instead of stopping with an error.
            in_memory: decode every image once into memory, or stream files from disk with DataLoader workers;
                ``auto`` decodes when the decoded images take at most a quarter of this machine's RAM.
        """
        if image_size < 1:
            raise UserError(f"--data.image_size {image_size} must be >= 1 (pixels per side), e.g. 32")
        self.input_shape = (1 if grayscale else 3, image_size, image_size)
        self.test_split, self.skip_corrupt, self._in_memory = test_split, skip_corrupt, in_memory
        super().__init__(**kwargs)

    @cached_property
    def listed(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """Files and labels of each given split (``train``, ``val``, ``test``), or of ``all``: split here."""
        raise NotImplementedError(f"{type(self).__name__} must implement listed")

    @cached_property
    def in_memory(self) -> bool:
        if self._in_memory != "auto":
            return bool(self._in_memory)
        count = sum(len(paths) for paths, _ in self.listed.values())
        needed = count * self.input_shape[0] * self.input_shape[1] ** 2
        choice = needed <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4
        how = "decoded into memory" if choice else "streamed from disk"
        rank_zero_info(f"{count} images, {needed / 2**30:.2f} GiB decoded: {how} (--data.in_memory true/false)")
        return choice

    def load_splits(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """A given train split without a test split has none: the val split is never reused as the test split."""
        splits = dict(self.listed)
        if "all" in splits:
            splits["train"], splits["test"] = self.split(*splits.pop("all"), self.test_split, "--data.test_split", 1)
        return splits

    def dataset(self, paths: list[Path], labels: torch.Tensor) -> Dataset:
        """Decoded once into memory, or streamed (headers opened now, so non-images fail before training)."""
        channels, size = self.input_shape[0], self.input_shape[1:]
        read = (lambda path: read_image(path, channels, size)) if self.in_memory else None  # headers only
        kept, images = read_all(paths, read, self.skip_corrupt, "Remove it, or pass --data.skip_corrupt true.")
        if self.in_memory:
            return TensorImages(torch.stack(images), labels[kept])
        return ImageFiles([paths[i] for i in kept], channels, size, labels[kept])


class FilesDataModule(LightningDataModule):
    """Image files to predict on: one file, a folder (searched recursively) or a glob pattern. Predict only."""

    class_names = input_shape = mean = std = None  # the CLI takes them from ``--ckpt_path``
    task = "multiclass"  # of checkpoints from before multi-label models (newer ones say theirs)

    def __init__(self, path: str, batch_size: int = 64, num_workers: int | Literal["auto"] = "auto") -> None:
        """
        Args:
            path: an image file, a folder of images (subfolders included) or a glob such as ``photos/*.jpg``.
            batch_size: images per batch.
            num_workers: DataLoader worker processes decoding files; ``auto``: Lightning's suggestion.
        """
        super().__init__()
        check_loader_args(batch_size, num_workers)
        self.paths = find_images(path)
        read_all(self.paths)  # an unreadable image stops here, before any run directory exists
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise UserError("--data FilesDataModule only predicts: use `predict --ckpt_path CKPT`.")

    def predict_dataloader(self) -> DataLoader:
        spec, workers = self.trainer.lightning_module.input_spec, self.num_workers
        if workers == "auto":
            workers = min(suggested_max_num_workers(self.trainer.num_devices), len(self.paths))
        files = ImageFiles(self.paths, spec.channels, spec.size)
        return DataLoader(files, batch_size=self.batch_size, num_workers=workers)
