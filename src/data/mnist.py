"""The MNIST family through torchvision's own dataset classes (download when online, local files offline)."""

import os
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity, extract_archive

from src.data.base import InMemoryImageDataModule
from src.errors import UserError

#: Where verified archives found in ``data_dir`` (e.g. a read-only ``../shared/datasets``) are extracted.
EXTRACT_DIR = Path("data")


class MNISTDataModule(InMemoryImageDataModule):
    """MNIST: 60,000 training images (split into train/val) and the official 10,000 as test.

    The base of the MNIST family (as in torchvision): a subclass only names its torchvision dataset class,
    class names and statistics. ``data_dir`` may hold the four raw files already
    (``<data_dir>/<Dataset>/raw/*-ubyte[.gz]``), as ``../shared/datasets`` does; otherwise torchvision downloads them.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    class_names = list(datasets.MNIST.classes)
    input_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs: Any) -> None:
        """
        Args:
            data_dir: folder with ``<Dataset>/raw/`` files, or where to download them.
            download: try downloading when the files are missing.
            **kwargs: batch size, workers, split and seed: see ``InMemoryImageDataModule``.
        """
        super().__init__(data_dir=data_dir, **kwargs)
        self.download = download

    def _raw_files(self, root: Path) -> list[Path]:
        raw = root / self.dataset_cls.__name__ / "raw"
        return [raw / os.path.basename(url) for url, _ in self.dataset_cls.resources]

    def _root(self) -> Path | None:
        """Where torchvision finds the extracted files: ``data_dir``, or data/ if its archives were extracted there."""
        root = Path(self.data_dir)
        if all(f.with_suffix("").is_file() for f in self._raw_files(root)):
            return root
        has_archives = all(f.is_file() for f in self._raw_files(root))
        if has_archives and all(f.with_suffix("").is_file() for f in self._raw_files(EXTRACT_DIR)):
            return EXTRACT_DIR
        return None

    def prepare_data(self) -> None:
        """Runs once per machine before setup: make the extracted raw files exist, or fail with what to do."""
        if self._root() is not None:
            return
        root, name = Path(self.data_dir), self.dataset_cls.__name__
        archives = self._raw_files(root)
        md5s = [md5 for _, md5 in self.dataset_cls.resources]
        if all(check_integrity(str(a), md5) for a, md5 in zip(archives, md5s, strict=True)):
            # Verified archives, e.g. in a shared read-only folder: extract into the project's data/, never
            # next to them.
            target = EXTRACT_DIR / name / "raw"
            target.mkdir(parents=True, exist_ok=True)
            for archive in archives:
                extract_archive(str(archive), str(target))
            return
        if self.download:
            try:
                for train in (True, False):
                    self.dataset_cls(str(root), train=train, download=True)
                return
            except (OSError, RuntimeError) as err:
                reason = f"download failed ({str(err).splitlines()[0]})"
        else:
            reason = "download=False"
        raise UserError(
            f"{name} not found in data_dir={str(root)!r} and {reason}. Put the four raw files "
            f"({', '.join(a.name for a in archives)}) in {root / name / 'raw'}, or point "
            f"--data.data_dir at a folder that has them (e.g. ../shared/datasets), or run once with internet."
        )

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        root = self._root()
        if root is None:  # setup() without prepare_data(), e.g. in a notebook
            self.prepare_data()
            root = self._root()
        dataset = self.dataset_cls(str(root), train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): same layout, splits and offline behaviour as MNIST."""

    dataset_cls = datasets.FashionMNIST
    class_names = list(datasets.FashionMNIST.classes)
    mean, std = (0.2860,), (0.3530,)
