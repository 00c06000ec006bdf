"""A folder of images, one sub-folder per class (``root/<class>/*.png|jpg|jpeg|bmp|webp``).

Either one root split into train/val/test (stratified, seeded), or separate ``train/``, ``val/`` and ``test/``
roots under ``data_dir`` (without ``val/``, val is split off ``train/``; without ``test/``, there is no test split:
``test`` and ``predict`` refuse to run rather than report validation accuracy as test accuracy). Images of any
size are resized to ``image_size``; grey or RGB as configured. Folders that fit in memory are decoded once into
uint8 tensors (the fast path); larger ones are streamed from disk by DataLoader workers. Both give the same images
in the same batches.
"""

import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes

from src.data.base import MeasuredImageDataModule
from src.data.images import IMAGE_SUFFIXES, read_image
from src.errors import UserError


class ImageFiles(Dataset):
    """Streams image files: decoded in DataLoader workers, one at a time, into uint8 tensors."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, image_size: int, grayscale: bool) -> None:
        self.paths, self.labels = paths, labels
        self.image_size, self.grayscale = image_size, grayscale

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        try:
            return read_image(path, 1 if self.grayscale else 3, (self.image_size, self.image_size)), self.labels[index]
        except OSError as err:  # a truncated file passes the header check and is only found here
            raise UserError(f"cannot read image {path} ({err}). Remove it and run again.") from None


class ImageFolderDataModule(MeasuredImageDataModule):
    """Class-per-folder images; normalisation statistics are measured on the training split."""

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: int = 32,
        grayscale: bool = False,
        test_split: float = 0.1,
        skip_corrupt: bool = False,
        in_memory: bool | Literal["auto"] = "auto",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data_dir: a root of class folders, or a folder holding ``train/`` (and optionally ``val/``, ``test/``).
            image_size: every image is resized to ``image_size`` x ``image_size``.
            grayscale: decode as one grey channel instead of RGB.
            test_split: with a single root, the fraction held out as test (stratified by class).
            skip_corrupt: skip unreadable images with a warning instead of stopping with an error.
            in_memory: decode every image once into memory (fast path) or stream files from disk with DataLoader
                workers; ``auto`` decodes when the decoded images take at most a quarter of this machine's RAM.
            **kwargs: batch size, workers, val split, seed and augmentation: see ``ImageDataModule``.
        """
        if image_size < 1:
            raise UserError(f"--data.image_size {image_size} must be >= 1 (pixels per side), e.g. 32")
        self.root = Path(data_dir)
        train_root = self.root / "train" if (self.root / "train").is_dir() else self.root
        if not train_root.is_dir():
            raise UserError(f"--data.data_dir {data_dir!r} is not a folder. Give a folder of class sub-folders.")
        try:
            self.class_names, _ = find_classes(str(train_root))
        except FileNotFoundError:
            raise UserError(
                f"--data.data_dir {data_dir!r} has no class sub-folders: put images in {train_root}/<class>/."
            ) from None
        self.input_shape = (1 if grayscale else 3, image_size, image_size)
        self.image_size, self.grayscale = image_size, grayscale
        self.test_split, self.skip_corrupt = test_split, skip_corrupt
        self._in_memory = in_memory
        super().__init__(data_dir=data_dir, **kwargs)

    def _list_folder(self, root: Path) -> tuple[list[Path], torch.Tensor]:
        """Every image file under ``root/<class>/`` and its label, in a fixed (sorted) order."""
        paths, labels = [], []
        for label, name in enumerate(self.class_names):
            files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(
                    f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)}): add images to it, "
                    "or remove the folder."
                )
            paths += files
            labels += [label] * len(files)
        return paths, torch.tensor(labels)

    def _unreadable(self, path: Path, err: OSError) -> None:
        if not self.skip_corrupt:
            raise UserError(f"cannot read image {path} ({err}). Remove it, or pass --data.skip_corrupt true.")
        warnings.warn(f"skipping unreadable image {path}", stacklevel=3)

    def _decode(self, paths: list[Path], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode files into one uint8 (N, C, H, W) tensor (the fast path)."""
        images, kept = [], []
        for i, path in enumerate(paths):
            try:
                images.append(read_image(path, 1 if self.grayscale else 3, (self.image_size, self.image_size)))
                kept.append(i)
            except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
                self._unreadable(path, err)
        return torch.stack(images), labels[kept]

    def _check_headers(self, paths: list[Path], labels: torch.Tensor) -> tuple[list[Path], torch.Tensor]:
        """Before streaming: open every file's header (cheap), so non-images fail or are skipped now."""
        kept = []
        for i, path in enumerate(paths):
            try:
                with Image.open(path):
                    kept.append(i)
            except OSError as err:
                self._unreadable(path, err)
        return [paths[i] for i in kept], labels[kept]

    @cached_property
    def _listed(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """The image files of each root (``train``/``val``/``test``, or ``all`` for a single root), listed once."""
        if not (self.root / "train").is_dir():
            return {"all": self._list_folder(self.root)}
        roots = [name for name in ("train", "val", "test") if (self.root / name).is_dir()]
        return {name: self._list_folder(self.root / name) for name in roots}

    @cached_property
    def in_memory(self) -> bool:
        """The fast path unless the decoded images would take more than a quarter of the machine's memory."""
        if self._in_memory != "auto":
            return bool(self._in_memory)
        count = sum(len(paths) for paths, _ in self._listed.values())
        needed = count * self.input_shape[0] * self.image_size**2
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        choice = needed <= available / 4
        rank_zero_info(
            f"{count} images, {needed / 2**30:.2f} GiB decoded: "
            f"{'decoded into memory' if choice else 'streamed from disk'} (--data.in_memory true/false to choose)"
        )
        return choice

    def load_splits(self) -> dict[str, tuple]:
        """train/val/test: separate roots if present, else a stratified split of one root; decoded or file lists.
        No ``test`` entry for ``train/`` without ``test/``: the val split is never reused as the test split."""
        splits = dict(self._listed)
        if "all" in splits:
            rest, test = self.split(*splits.pop("all"), self.test_split, "--data.test_split", reserve=1)
            splits = dict(zip(("train", "val"), self.split(*rest, self.val_split), strict=True)) | {"test": test}
        elif "val" not in splits:
            splits["train"], splits["val"] = self.split(*splits["train"], self.val_split)
        prepare = self._decode if self.in_memory else self._check_headers
        return {name: prepare(*split) for name, split in splits.items()}

    def _require_test_split(self, stage: str | None) -> None:
        """``train/`` without ``test/`` has no test images: never evaluate on the val split under the name test."""
        stage = getattr(stage, "value", stage)  # Lightning passes a str enum
        if stage in ("test", "predict") and "train" in self._listed and "test" not in self._listed:
            raise UserError(
                f"--data.data_dir {str(self.root)!r} has train/ but no test/ folder, so there are no test images "
                f"to {stage} on: add {self.root / 'test'}/<class>/ images, or put every class folder directly in "
                "one root to split train/val/test from it (--data.test_split)."
            )

    def prepare_data(self) -> None:
        """Runs before the trainer's loggers create anything: a missing test split stops ``test``/``predict`` here,
        so a failed evaluation of a run's checkpoint leaves that run untouched."""
        self._require_test_split(self.trainer.state.fn if self.trainer is not None else None)

    def setup(self, stage: str | None = None) -> None:
        """Runs on every process: wrap the prepared splits; ``test_set`` stays ``None`` without a ``test/`` root."""
        self._require_test_split(stage)
        if self.train_set is None:
            self.train_set, self.val_set = (self._dataset(*self._splits[name]) for name in ("train", "val"))
            self.test_set = self._dataset(*self._splits["test"]) if "test" in self._splits else None

    def _dataset(self, images: torch.Tensor | list[Path], labels: torch.Tensor) -> Dataset:
        if isinstance(images, list):
            return ImageFiles(images, labels, self.image_size, self.grayscale)
        return super()._dataset(images, labels)
