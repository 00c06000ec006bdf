"""What differs between one class per image (softmax) and several (a sigmoid per label): probabilities, loss
weights against imbalance, and the class-averaged scores of a confusion matrix."""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from src.errors import UserError

Task = Literal["multiclass", "multilabel"]


def probabilities(out: torch.Tensor, task: Task = "multiclass") -> torch.Tensor:
    """Class probabilities from the model's output: the softmax of logits (or of ``loss='nll'``'s log-probabilities),
    or for multi-label models one sigmoid per label."""
    out = out.detach().float()
    return torch.sigmoid(out) if task == "multilabel" else F.softmax(out, dim=1)


def class_weight_tensor(
    weights: str | Sequence[float] | dict[str, float] | None, class_names: Sequence[str]
) -> torch.Tensor | None:
    """``--model.class_weights`` as one weight per class; ``balanced``: ones until the training counts are known."""
    names, option = list(class_names), "--model.class_weights"
    if weights is None or weights == "balanced":
        return None if weights is None else torch.ones(len(names))
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise UserError(f"{option} names unknown class(es) {unknown}; the classes are {names}")
        weights = [float(weights.get(name, 1.0)) for name in names]
    if isinstance(weights, str) or len(weights) != len(names):
        given = weights if isinstance(weights, str) else f"has {len(weights)} values"
        raise UserError(f"{option} {given}: give balanced, one weight per class ({len(names)}: {names}), or a dict")
    if min(weights) < 0 or max(weights) <= 0:
        raise UserError(f"{option} {list(weights)}: weights must be >= 0 and not all 0")
    return torch.tensor(weights, dtype=torch.float)


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (k * n_c) per class (scikit-learn's ``balanced``); multi-hot labels: negatives / positives per label."""
    if labels.dim() == 2:
        positives = labels.sum(0).double()
        return ((len(labels) - positives) / positives.clamp(min=1)).float()
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    return (len(labels) / (num_classes * counts.clamp(min=1))).float()


def class_averages(confusion: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
    """Balanced accuracy (the mean recall of the classes that occur, as scikit-learn's) and macro F1 (over all)."""
    correct, support, predicted = confusion.diag().double(), confusion.sum(1).double(), confusion.sum(0).double()
    f1 = 2 * correct / (support + predicted).clamp(min=1)
    balanced = (correct / support.clamp(min=1))[support > 0].mean() if (support > 0).any() else support.sum()
    return {f"{stage}/balanced_acc": balanced.float(), f"{stage}/macro_f1": f1.mean().float()}


def per_class_accuracy(confusion: torch.Tensor, class_names: Sequence[str], stage: str) -> dict[str, torch.Tensor]:
    """``<stage>/acc_per_class/<class>`` of a confusion matrix with true classes as rows (a class never seen: 0)."""
    recall = confusion.diag() / confusion.sum(1).clamp(min=1)
    return {f"{stage}/acc_per_class/{name}": value for name, value in zip(class_names, recall, strict=True)}
