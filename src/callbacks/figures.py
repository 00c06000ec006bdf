"""Matplotlib figures for TensorBoard and reports: a confusion matrix and a grid of images with captions."""

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure


def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Counts with true classes as rows and predicted classes as columns, class names on both axes."""
    n = len(class_names)
    side = min(max(4.0, 0.5 * n + 2.5), 20.0)
    fig = Figure(figsize=(side, side * 0.9), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.subplots()
    counts = confusion.cpu().long()
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    if n <= 30:  # beyond that, numbers would overlap
        threshold = counts.max().item() / 2
        for i in range(n):
            for j in range(n):
                value = counts[i, j].item()
                color = "white" if value > threshold else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=7)
    fig.tight_layout()
    return fig


def image_grid_figure(images: torch.Tensor, captions: Sequence[str], title: str, columns: int = 8) -> Figure:
    """[0, 1] float images (N, C, H, W), grey or RGB, each with its caption (e.g. class names)."""
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig = Figure(figsize=(1.6 * columns, 1.9 * rows + 0.4), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images.float().clamp(0, 1).cpu(), captions, strict=False):
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
