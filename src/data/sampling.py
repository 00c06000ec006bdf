"""Which images go where and in which order: stratified splits, k-fold cross-validation and the class-balanced
sampler, by position, so that images, labels and ids are cut alike (tensors, arrays or lists of paths)."""

from collections.abc import Iterator, Sequence
from math import ceil
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from src.errors import UserError


def take(items: Any, index: Sequence[int]) -> Any:
    """``items[index]`` of a tensor, an array or a list (of paths)."""
    if isinstance(items, list):
        return [items[i] for i in index]
    return items[torch.as_tensor(index).long()] if isinstance(items, torch.Tensor) else items[np.asarray(index)]


def join(a: Any, b: Any) -> Any:
    """Two splits' images (or labels, ids) as one: tensors, arrays or lists."""
    if isinstance(a, list):
        return a + list(b)
    return torch.cat([a, b]) if isinstance(a, torch.Tensor) else np.concatenate([a, b])


def check_class_sizes(labels: torch.Tensor, class_names: Sequence[str], needed: int, why: str, who: str) -> None:
    counts = torch.bincount(labels.long())
    for c in counts.nonzero().flatten().tolist():
        if counts[c] < needed:
            raise UserError(
                f"class {class_names[c]!r} has {int(counts[c])} image(s), too few {why}: {who} needs at least "
                f"{needed} per class (one per split). Add images of {class_names[c]!r}, or leave that class out."
            )


def split_indices(
    labels: torch.Tensor, fraction: float, option: str, class_names: Sequence[str], reserve: int = 0, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Kept and held-out positions, stratified by class (multi-hot labels: random): the permutation scikit-learn's
    ``train_test_split`` applies to arrays. ``reserve``: more splits cut from the kept part later."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"{option} {fraction} must be between 0 and 1 (exclusive), e.g. 0.1")
    labels = torch.as_tensor(labels)
    multilabel, n = labels.dim() == 2, len(labels)
    if not multilabel:  # one image of every class in every split
        check_class_sizes(labels, class_names, 2 + reserve, f"to split by {option} {fraction}", "a stratified split")
    k = 1 if multilabel else int(torch.bincount(labels.long()).count_nonzero())
    held = ceil(round(fraction * n, 6))  # rounded first: 0.07 of 100 images is 7, not 8
    if held < k or n - held < k:
        side, count = ("holds out", held) if held < k else ("keeps", n - held)
        raise UserError(
            f"{option} {fraction} {side} {count} of {n} images, fewer than the {k} classes (a stratified "
            f"split needs one of each class on both sides): set {option} between {-(-100 * k // n) / 100} "
            f"and {100 * (n - k) // n / 100}, or add images."
        )
    from sklearn.model_selection import train_test_split  # imported here: ~0.2 s that only splitting needs

    stratify = None if multilabel else labels.long().numpy()
    kept, out = train_test_split(np.arange(n), test_size=held, stratify=stratify, random_state=seed)
    return kept.tolist(), out.tolist()


def fold_indices(
    labels: torch.Tensor, folds: int, fold: int, class_names: Sequence[str], seed: int
) -> tuple[list[int], list[int]]:
    """Training and val positions of fold ``fold`` of ``folds``, seeded: stratified for one label per image."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if labels.dim() == 1:
        check_class_sizes(labels, class_names, folds, f"for --data.folds {folds}", "stratified k-fold")
    splitter = (KFold if labels.dim() == 2 else StratifiedKFold)(folds, shuffle=True, random_state=seed)
    y = labels.long().numpy() if labels.dim() == 1 else None
    train, val = list(splitter.split(np.zeros((len(labels), 1)), y))[fold]
    return train.tolist(), val.tolist()


class BalancedSampler(DistributedSampler):
    """Every class drawn equally often, with replacement, ``len(labels)`` draws an epoch, sharded over processes.

    A ``DistributedSampler`` because Lightning then keeps it under DDP (a plain sampler would be wrapped, and the
    wrapper does not pass ``set_epoch`` on) and calls its ``set_epoch``: the draws are a function of seed and epoch
    only, so every rank draws the same list (and takes its own stride of it) and a resumed run draws what the
    uninterrupted one did. torch's ``WeightedRandomSampler`` keeps a running generator instead."""

    def __init__(self, labels: torch.Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(range(len(labels)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        counts = torch.bincount(labels.long()).double()
        self.weights = (1.0 / counts.clamp(min=1))[labels.long()]  # a class's images share 1 / (its count)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return iter(draws[self.rank : self.total_size : self.num_replicas].tolist())
