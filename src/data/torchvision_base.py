"""Datasets that torchvision downloads (MNIST family, CIFAR-10): local files, a verified archive, or a download."""

from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import VisionDataset
from torchvision.datasets.utils import check_integrity, extract_archive

from src.data import base
from src.data.base import ImageDataModule
from src.errors import UserError


class TorchvisionDataModule(ImageDataModule):
    """Finds a torchvision dataset's files, in this order, and otherwise says exactly what to put where.

    1. ``data_dir`` already holds the files torchvision reads (or ``data/`` does, from an earlier extraction);
    2. ``data_dir`` holds the verified official archives (e.g. a read-only ``../shared/datasets``): extracted into
       the project's ``data/``, never next to them;
    3. torchvision downloads them into ``data_dir`` (when ``download``).
    Subclasses name ``dataset_cls`` and implement ``_ready``, ``_archives``, ``_extract``, ``_wanted`` and
    ``load_split``.
    """

    dataset_cls: type[VisionDataset]

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs: Any) -> None:
        """
        Args:
            data_dir: folder with the dataset's files or official archives, or where to download them.
            download: try downloading when the files are missing.
            **kwargs: batch size, workers, split, seed and augmentation: see ``ImageDataModule``.
        """
        super().__init__(data_dir=data_dir, **kwargs)
        self.download = download

    def _ready(self, root: Path) -> bool:
        """The files torchvision reads are under ``root``."""
        raise NotImplementedError

    def _archives(self, source: Path) -> list[tuple[Path, str]]:
        """The official archives in ``source`` and their MD5 checksums."""
        raise NotImplementedError

    def _extract(self, source: Path, target: Path) -> bool:
        """Extract the verified archives in ``source`` into ``target``; False when they are not there (intact)."""
        archives = self._archives(source)
        if not all(check_integrity(str(archive), md5) for archive, md5 in archives):
            return False
        for archive, _ in archives:
            folder = target / archive.parent.relative_to(source)  # same layout as in source
            folder.mkdir(parents=True, exist_ok=True)
            extract_archive(str(archive), str(folder))
        return True

    def _wanted(self, root: Path) -> str:
        """Which files to put where, for the error message."""
        raise NotImplementedError

    def _root(self) -> Path | None:
        """``data_dir``, or ``data/`` when that is where ``data_dir``'s archives were extracted."""
        source = Path(self.data_dir)
        if self._ready(source):
            return source
        if all(archive.is_file() for archive, _ in self._archives(source)) and self._ready(base.EXTRACT_DIR):
            return base.EXTRACT_DIR
        return None

    def prepare_data(self) -> None:
        """Runs once per machine before setup: make the files exist, or fail with what to do."""
        root = Path(self.data_dir)
        if self._root() is not None or self._extract(root, base.EXTRACT_DIR):
            return
        if self.download:
            try:
                self.dataset_cls(str(root), train=True, download=True)
                return
            except (OSError, RuntimeError) as err:
                reason = f"download failed ({str(err).splitlines()[0]})"
        else:
            reason = "download=False"
        raise UserError(
            f"{self.dataset_cls.__name__} not found in data_dir={str(root)!r} and {reason}. {self._wanted(root)}, "
            "or point --data.data_dir at a folder that has them, or run once with internet."
        )

    def torchvision_dataset(self, train: bool) -> VisionDataset:
        """torchvision's dataset object for the split (its ``data`` and ``targets`` are read once)."""
        if self._root() is None:  # setup() without prepare_data(), e.g. in a notebook
            self.prepare_data()
        root = self._root()
        try:
            return self.dataset_cls(str(root), train=train, download=False)
        except RuntimeError as err:  # torchvision's checksum test failed
            raise UserError(
                f"{self.dataset_cls.__name__} files in {root} are incomplete or corrupted ({err}). Delete them, "
                "then run again to download or extract them afresh."
            ) from None

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
