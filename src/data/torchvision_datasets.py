"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision: the official train split (split into train/val) and the
official test split, held in memory as uint8 tensors.

Their files are found, in this order, and otherwise the error says what to put where: (1) ``data_dir`` holds the
files torchvision reads (or ``data/`` does, from an earlier extraction); (2) ``data_dir`` holds the verified
official archives, e.g. in a read-only folder: they are extracted into the project's ``data/``, never next to
them; (3) torchvision downloads them into ``data_dir`` (when ``download``).
"""

import os
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity, extract_archive

from src.data.base import ImageDataModule
from src.errors import UserError

#: Where verified archives found in ``data_dir`` are extracted: inside the project, whatever ``data_dir`` is.
EXTRACT_DIR = Path("data")


class TorchvisionDataModule(ImageDataModule):
    """A subclass names ``dataset_cls`` and says which files torchvision reads under a root (``files``), which
    official archives (path, MD5) hold them (``archives``), what to put where (``wanted``) and how torchvision's
    dataset becomes uint8 (N, C, H, W) images and labels (``to_tensors``)."""

    dataset_cls: type[datasets.VisionDataset]

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs: Any) -> None:
        """
        Args:
            data_dir: folder with the dataset's files or official archives, or where to download them.
            download: try downloading when the files are missing.
            **kwargs: batch size, workers, val split, seed and augmentation: see ``ImageDataModule``.
        """
        super().__init__(**kwargs)
        self.data_dir, self.download = data_dir, download

    def _root(self) -> Path | None:
        """``data_dir``, or ``data/`` when that is where ``data_dir``'s archives were extracted."""
        source = Path(self.data_dir)
        for root in (source, EXTRACT_DIR):
            from_source = root == source or all(archive.is_file() for archive, _ in self.archives(source))
            if from_source and all(path.is_file() for path in self.files(root)):
                return root
        return None

    def _extract(self, source: Path) -> bool:
        """Extract the verified archives in ``source`` into ``EXTRACT_DIR``; False when they are not all intact."""
        archives = self.archives(source)
        if not all(check_integrity(str(archive), md5) for archive, md5 in archives):
            return False
        for archive, _ in archives:
            folder = EXTRACT_DIR / archive.parent.relative_to(source)  # same layout as in source
            folder.mkdir(parents=True, exist_ok=True)
            extract_archive(str(archive), str(folder))
        return True

    def prepare_data(self) -> None:
        """Runs once per machine before setup: make the files exist, or fail with what to do."""
        source = Path(self.data_dir)
        if self._root() is None and not self._extract(source):
            reason = "download=False"
            if self.download:
                try:
                    self.dataset_cls(str(source), train=True, download=True)
                    reason = ""
                except (OSError, RuntimeError) as err:
                    reason = f"download failed ({str(err).splitlines()[0]})"
            if reason:
                raise UserError(
                    f"{self.dataset_cls.__name__} not found in data_dir={str(source)!r} and {reason}. "
                    f"{self.wanted(source)}, or point --data.data_dir at a folder that has them, or run once with "
                    "internet."
                )
        super().prepare_data()

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self._root() is None:  # setup() without prepare_data(), e.g. in a notebook
            self.prepare_data()
        root = self._root()
        try:
            train, test = (self.dataset_cls(str(root), train=train, download=False) for train in (True, False))
        except RuntimeError as err:  # torchvision's checksum test failed
            raise UserError(
                f"{self.dataset_cls.__name__} files in {root} are incomplete or corrupted ({err}). Delete them, "
                "then run again to download or extract them afresh."
            ) from None
        return {"train": self.to_tensors(train), "test": self.to_tensors(test)}


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 training images and the official 10,000 as test. ``data_dir`` may hold the four raw files
    (``<data_dir>/MNIST/raw/*-ubyte[.gz]``). The rest of the family only names its class, classes and statistics."""

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    class_names = list(datasets.MNIST.classes)
    input_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)

    def archives(self, root: Path) -> list[tuple[Path, str]]:
        raw = root / self.dataset_cls.__name__ / "raw"
        return [(raw / os.path.basename(url), md5) for url, md5 in self.dataset_cls.resources]

    def files(self, root: Path) -> list[Path]:
        return [archive.with_suffix("") for archive, _ in self.archives(root)]

    def wanted(self, root: Path) -> str:
        names = ", ".join(archive.name for archive, _ in self.archives(root))
        raw = root / self.dataset_cls.__name__ / "raw"
        return f"Put the four raw files ({names}) in {raw} (the official gzipped files or their extracted copies)"

    def to_tensors(self, dataset: datasets.MNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): same layout, splits and offline behaviour as MNIST."""

    dataset_cls = datasets.FashionMNIST
    class_names = list(datasets.FashionMNIST.classes)
    mean, std = (0.2860,), (0.3530,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 32x32 RGB training images and the official 10,000 as test (184 MB as uint8). ``data_dir``
    may hold the extracted ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``. Augmentation (random crop with
    padding 4, horizontal flip) is switched on in ``configs/data/cifar10.yaml``, not here."""

    dataset_cls: type[datasets.CIFAR10] = datasets.CIFAR10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    input_shape = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # per pixel, the 50,000 training images

    def archives(self, root: Path) -> list[tuple[Path, str]]:
        return [(root / self.dataset_cls.filename, self.dataset_cls.tgz_md5)]

    def files(self, root: Path) -> list[Path]:
        """Every batch file (torchvision checks their checksums when it reads them)."""
        cls = self.dataset_cls
        names = [name for name, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]]
        return [root / cls.base_folder / name for name in names]

    def wanted(self, root: Path) -> str:
        cls = self.dataset_cls
        return (
            f"Put {cls.filename} or its extracted {cls.base_folder}/ in {root} (a folder of JPEGs per class works "
            "too: --data configs/data/image_folder.yaml)"
        )

    def to_tensors(self, dataset: datasets.CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
        if dataset.classes != self.class_names:
            raise UserError(f"{dataset.root} has classes {dataset.classes}, not CIFAR-10's {self.class_names}")
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
        return images, torch.tensor(dataset.targets)
