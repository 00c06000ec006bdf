"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, in memory, with the official test split: read from
``data_dir`` (or from ``data/``, where verified archives in ``data_dir`` are extracted), else downloaded."""

from pathlib import Path
from typing import Any

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity, extract_archive

from src.data.arrays import channels_first
from src.data.base import ImageDataModule
from src.errors import UserError

#: Where verified archives found in ``data_dir`` are extracted: inside the project, whatever ``data_dir`` is.
EXTRACT_DIR = Path("data")


class TorchvisionDataModule(ImageDataModule):
    """A subclass names ``dataset_cls``, the files it reads (``files``), the official archives as (path, MD5)
    (``archives``) and what to put where (``wanted``, given the archives' ``names`` and ``folder``)."""

    dataset_cls: type[datasets.VisionDataset]
    wanted: str

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs: Any) -> None:
        """
        Args:
            data_dir: folder with the dataset's files or official archives, or where to download them.
            download: try downloading when the files are missing.
        """
        super().__init__(**kwargs)
        self.data_dir, self.download = Path(data_dir), download

    def _root(self) -> Path | None:
        """``data_dir`` when it has the files, else ``data/`` when they were extracted there from its archives."""
        archived = all(archive.is_file() for archive, _ in self.archives(self.data_dir))
        roots = (self.data_dir, EXTRACT_DIR) if archived else (self.data_dir,)
        return next((root for root in roots if all(path.is_file() for path in self.files(root))), None)

    def prepare_data(self) -> None:
        archives = self.archives(self.data_dir)
        if self._root() is not None:
            return
        if all(check_integrity(str(archive), md5) for archive, md5 in archives):
            for archive, _ in archives:
                folder = EXTRACT_DIR / archive.parent.relative_to(self.data_dir)  # the same layout as in data_dir
                folder.mkdir(parents=True, exist_ok=True)
                extract_archive(str(archive), str(folder))
            return
        reason = "download=False"
        if self.download:
            try:
                self.dataset_cls(str(self.data_dir), train=True, download=True)
                return
            except (OSError, RuntimeError) as err:
                reason = f"download failed ({str(err).splitlines()[0]})"
        wanted = self.wanted.format(names=", ".join(a.name for a, _ in archives), folder=archives[0][0].parent)
        raise UserError(
            f"{self.dataset_cls.__name__} not found in data_dir={str(self.data_dir)!r} and {reason}. {wanted}, or "
            "point --data.data_dir at a folder that has them, or run once with internet."
        )

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.prepare_data()  # a no-op once the files are there; setup() may run without it, e.g. in a notebook
        root = self._root()
        try:
            sets = {name: self.dataset_cls(str(root), train=name == "train") for name in ("train", "test")}
        except RuntimeError as err:  # torchvision's checksum test failed
            raise UserError(
                f"{self.dataset_cls.__name__} files in {root} are incomplete or corrupted ({err}). Delete them, "
                "then run again to download or extract them afresh."
            ) from None
        images = {name: channels_first(torch.as_tensor(d.data), (1, 3)).contiguous() for name, d in sets.items()}
        return {name: (images[name], torch.as_tensor(d.targets)) for name, d in sets.items()}


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 training and 10,000 test images; ``data_dir`` may hold ``MNIST/raw/*-ubyte[.gz]``."""

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    class_names = list(datasets.MNIST.classes)
    input_shape = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)
    wanted = "Put the four raw files ({names}) in {folder} (the official gzipped files or their extracted copies)"

    def archives(self, root: Path) -> list[tuple[Path, str]]:
        return [(root / self.dataset_cls.__name__ / "raw" / name, md5) for name, md5 in self.dataset_cls.resources]

    def files(self, root: Path) -> list[Path]:
        return [archive.with_suffix("") for archive, _ in self.archives(root)]


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): same layout, splits and offline behaviour as MNIST."""

    dataset_cls = datasets.FashionMNIST
    class_names = list(datasets.FashionMNIST.classes)
    mean, std = (0.2860,), (0.3530,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 RGB images (184 MB as uint8)."""

    dataset_cls: type[datasets.CIFAR10] = datasets.CIFAR10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    input_shape = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # per pixel, the 50,000 training images
    wanted = "Put {names} or its extracted cifar-10-batches-py/ in {folder} (a folder of JPEGs per class works too: "
    wanted += "--data configs/data/image_folder.yaml)"

    def archives(self, root: Path) -> list[tuple[Path, str]]:
        return [(root / self.dataset_cls.filename, self.dataset_cls.tgz_md5)]

    def files(self, root: Path) -> list[Path]:
        cls = self.dataset_cls
        names = [name for name, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]]
        return [root / cls.base_folder / name for name in names]
