"""The multi-label task's scores, from every image's per-label probabilities (gathered from all processes, so exact):
the one place that the model's metrics, the test report and the dashboard take them from. Imported only for
multi-label models."""

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import multilabel_average_precision

#: Candidate decision thresholds: each label gets the one that maximises its F1 on the validation images.
GRID = torch.linspace(0.02, 0.98, 49)


def counts(predicted: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-label true positives, false positives and false negatives of boolean (N, K) predictions."""
    return (predicted & targets).sum(0), (predicted & ~targets).sum(0), (~predicted & targets).sum(0)


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each label's threshold with the best F1 on these images (the lowest of equals)."""
    f1 = []
    for t in GRID.tolist():
        tp, fp, fn = counts(probs >= t, targets.bool())
        f1.append(2 * tp / (2 * tp + fp + fn).clamp(min=1))
    return GRID[torch.stack(f1).argmax(0)]


def scores(
    probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], thresholds: torch.Tensor | None = None
) -> dict[str, Any]:
    """Per label precision, recall, F1, AP and support at ``thresholds`` (``None``: tuned on these images), with
    micro and macro F1, mean AP over labels that occur, and exact-match accuracy (the whole label set right)."""
    probs, y = probs.float().cpu(), targets.cpu().bool()
    thresholds = tune_thresholds(probs, y) if thresholds is None else thresholds.float().cpu()
    predicted = probs >= thresholds
    tp, fp, fn = (c.double() for c in counts(predicted, y))
    precision, recall = tp / (tp + fp).clamp(min=1), tp / (tp + fn).clamp(min=1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    support = y.sum(0)
    ap = multilabel_average_precision(probs, y.long(), num_labels=len(class_names), average=None, thresholds=None)
    ap = torch.where(support > 0, ap.double(), torch.nan)  # AP of a label with no positive image is undefined
    labels = [
        {"class": n, "precision": p, "recall": r, "f1": f, "ap": a, "support": int(s), "threshold": round(t, 4)}
        for n, p, r, f, a, s, t in zip(
            class_names, *(v.tolist() for v in (precision, recall, f1, ap, support, thresholds)), strict=True
        )
    ]
    return {
        "labels": labels,
        "thresholds": thresholds,
        "map": float(ap.nanmean()) if (support > 0).any() else 0.0,
        "micro_f1": float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1)),
        "macro_f1": float(f1.mean()),
        "exact_match": float((predicted == y).all(1).double().mean()) if len(y) else 0.0,
        "support": len(y),
    }


def logged(result: dict[str, Any], stage: str) -> dict[str, float]:
    """The scalars of ``scores`` as ``<stage>/...`` metrics: ``acc`` is the exact-match accuracy."""
    metrics = {f"{stage}/{k}": result[k] for k in ("map", "micro_f1", "macro_f1")} | {
        f"{stage}/acc": result["exact_match"]
    }
    for label in result["labels"]:
        metrics[f"{stage}/f1_per_label/{label['class']}"] = label["f1"]
        if label["support"]:
            metrics[f"{stage}/ap_per_label/{label['class']}"] = label["ap"]
    return metrics
