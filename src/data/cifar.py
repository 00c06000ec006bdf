"""CIFAR-10 through torchvision's dataset class (download when online, local files offline), decoded into memory."""

from pathlib import Path

import torch
from torchvision import datasets

from src.data.torchvision_base import TorchvisionDataModule
from src.errors import UserError


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 32x32 RGB training images (split into train/val) and the official 10,000 as test.

    ``data_dir`` may hold torchvision's extracted ``cifar-10-batches-py/`` or the ``cifar-10-python.tar.gz`` archive;
    otherwise torchvision downloads it. All 60,000 images take 184 MB as uint8, so they are kept in memory and
    batched as tensors. Augmentation (random crop with padding 4, horizontal flip) is switched on in
    ``configs/data/cifar10.yaml``, not here.
    """

    dataset_cls: type[datasets.CIFAR10] = datasets.CIFAR10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    input_shape = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # per pixel, the 50,000 training images

    def _ready(self, root: Path) -> bool:
        """Every batch file is there (torchvision checks their checksums when it reads them)."""
        cls = self.dataset_cls
        names = [name for name, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]]
        return all((root / cls.base_folder / name).is_file() for name in names)

    def _archives(self, source: Path) -> list[tuple[Path, str]]:
        return [(source / self.dataset_cls.filename, self.dataset_cls.tgz_md5)]

    def _wanted(self, root: Path) -> str:
        cls = self.dataset_cls
        return (
            f"Put {cls.filename} or its extracted {cls.base_folder}/ in {root} (a folder of JPEGs per class works "
            "too: --data configs/data/image_folder.yaml)"
        )

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.torchvision_dataset(train)
        if dataset.classes != self.class_names:
            raise UserError(f"{dataset.root} has classes {dataset.classes}, not CIFAR-10's {self.class_names}")
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
        return images, torch.tensor(dataset.targets)
