"""Likely label errors from out-of-fold probabilities, by confident learning (Northcutt, Jiang and Chuang, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021). Written out, not imported from cleanlab: the rule is a
few lines, and cleanlab would bring pandas and more into a template whose core needs neither."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from src.callbacks.dashboard import image_grid_figure


def find_label_issues(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int, float]]:
    """``(row, suggested class, self-confidence)`` of each likely error, the lowest self-confidence first.

    Per class j, the threshold t_j is the mean probability of j over the images labelled j. An image's confident
    class is its most probable class k with p_k >= t_k (the off-diagonal of the paper's confident joint); when that is
    not its given label, the label is likely wrong and k the suggestion. Held-out probabilities only: a model's
    probabilities on its own training images would have memorised the wrong labels."""
    probs, labels = probs.double(), labels.long()
    rows, k = torch.arange(len(labels)), probs.shape[1]
    given = probs[rows, labels]  # self-confidence
    thresholds = torch.stack([given[labels == j].mean() if (labels == j).any() else probs.new_tensor(2.0)
                              for j in range(k)])  # fmt: skip  # a class nobody has is never confident
    confident = probs.where(probs >= thresholds, -1.0)
    suggested = confident.argmax(1)
    issue = (confident.max(1).values >= 0) & (suggested != labels)
    order = sorted(rows[issue].tolist(), key=lambda i: (given[i].item(), i))
    return [(i, int(suggested[i]), float(given[i])) for i in order]


def images_of(data: Any, ids: Sequence[str]) -> torch.Tensor:
    """[0, 1] images (N, C, H, W) of the training pool by id, read through the data module's datasets."""
    data.setup("fit")
    splits = ((data.train_set, "train"), (data.val_set, "val"))
    where = {s: (d, j) for d, split in splits for j, s in enumerate(data.sample_ids(split))}
    return torch.stack([where[s][0][where[s][1]][0] for s in ids]).float() / 255


def write_label_issues(
    folder: Path, ids: Sequence[str], probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str], data: Any
) -> list[tuple[int, int, float]]:
    """``label_issues.csv`` (ranked) and ``label_issues.png`` (the first 32, from the data module ``data``)."""
    issues = find_label_issues(probs, labels)
    with (folder / ".label_issues.csv.partial").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "given_label", "suggested_label", "score"])
        writer.writerows([ids[i], names[labels[i]], names[s], f"{p:.6f}"] for i, s, p in issues)
    (folder / ".label_issues.csv.partial").replace(folder / "label_issues.csv")
    top = issues[:32]
    if top:
        captions = [f"given {names[labels[i]]}\nsuggested {names[s]}" for i, s, _ in top]
        title = f"{len(issues)} likely label errors of {len(ids)} images, least self-confident first"
        figure = image_grid_figure(images_of(data, [ids[i] for i, _, _ in top]), captions, title)
        figure.savefig(folder / "label_issues.png")
    return issues
