"""The MNIST family through torchvision's own dataset classes (download when online, local files offline)."""

import os
from pathlib import Path

import torch
from torchvision import datasets

from src.data.torchvision_base import TorchvisionDataModule


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 training images (split into train/val) and the official 10,000 as test.

    The base of the MNIST family (as in torchvision): a subclass only names its torchvision dataset class,
    class names and statistics. ``data_dir`` may hold the four raw files already
    (``<data_dir>/<Dataset>/raw/*-ubyte[.gz]``), as ``../shared/datasets`` does; otherwise torchvision downloads them.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    class_names = list(datasets.MNIST.classes)
    input_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)

    def _archives(self, root: Path) -> list[tuple[Path, str]]:
        raw = root / self.dataset_cls.__name__ / "raw"
        return [(raw / os.path.basename(url), md5) for url, md5 in self.dataset_cls.resources]

    def _ready(self, root: Path) -> bool:
        return all(archive.with_suffix("").is_file() for archive, _ in self._archives(root))

    def _wanted(self, root: Path) -> str:
        names = ", ".join(archive.name for archive, _ in self._archives(root))
        raw = root / self.dataset_cls.__name__ / "raw"
        return f"Put the four raw files ({names}) in {raw} (the official gzipped files or their extracted copies)"

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.torchvision_dataset(train)
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): same layout, splits and offline behaviour as MNIST."""

    dataset_cls = datasets.FashionMNIST
    class_names = list(datasets.FashionMNIST.classes)
    mean, std = (0.2860,), (0.3530,)
