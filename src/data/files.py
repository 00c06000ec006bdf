"""Your own image files, classified by a checkpoint: ``predict --ckpt_path CKPT --data configs/data/files.yaml``;
class names, channels, size and statistics come from the checkpoint."""

from typing import Literal

from lightning import LightningDataModule
from lightning.fabric.utilities.data import suggested_max_num_workers
from torch.utils.data import DataLoader

from src.data.base import check_loader_args
from src.data.images import ImageFiles, find_images, open_header, read_all
from src.errors import UserError


class FilesDataModule(LightningDataModule):
    """Image files to predict on: one file, a folder (searched recursively) or a glob pattern. Predict only."""

    class_names = input_shape = mean = std = None  # the CLI takes them from ``--ckpt_path``

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
        read_all(self.paths, open_header)  # an unreadable image stops here, before any run directory exists
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dataset: ImageFiles | None = None

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise UserError("--data FilesDataModule only predicts: use `predict --ckpt_path CKPT`.")
        spec = self.trainer.lightning_module.input_spec
        self.dataset = ImageFiles(self.paths, spec.channels, spec.size)

    def predict_dataloader(self) -> DataLoader:
        workers = self.num_workers
        if workers == "auto":
            workers = min(suggested_max_num_workers(self.trainer.num_devices if self.trainer else 1), len(self.paths))
        return DataLoader(self.dataset, batch_size=self.batch_size, num_workers=workers)
