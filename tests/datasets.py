"""Small data modules the tests name on the command line (``--data tests.datasets.X``): offline, seconds to build."""

import torch

from src.data.base import ImageDataModule


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (torch.from_numpy(data.images) * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    return images, torch.from_numpy(data.target)


class PairedDigits(ImageDataModule):
    """Two of sklearn's digits side by side (8 x 16), labelled with the set of digits shown (one or two labels)."""

    class_names = [str(d) for d in range(10)]
    input_shape = (1, 8, 16)
    multilabel = True

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, targets = digits()
        n = 3000
        a, b = torch.randint(len(images), (2, n), generator=torch.Generator().manual_seed(0))
        labels = torch.zeros(n, 10)
        labels[torch.arange(n), targets[a]] = 1
        labels[torch.arange(n), targets[b]] = 1
        pairs = torch.cat([images[a], images[b]], dim=3)
        return {"train": (pairs[:2400], labels[:2400]), "test": (pairs[2400:], labels[2400:])}


class ImbalancedDigits(ImageDataModule):
    """sklearn's digits with classes 5-9 cut to 10 % of their training images (the test split stays balanced)."""

    class_names = [str(d) for d in range(10)]
    input_shape = (1, 8, 8)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, targets = digits()
        (train, train_y), test = self.split(images, targets, 0.3, "--data.test_split", 1, 0)
        keep = torch.cat([torch.nonzero(train_y == c).flatten()[: None if c < 5 else 15] for c in range(10)]).sort()
        return {"train": (train[keep.values], train_y[keep.values]), "test": test}
