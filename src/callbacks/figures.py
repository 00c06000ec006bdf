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
    """[0, 1] float images (N, C, H, W), grey or RGB, each with its caption (e.g. class names), in a grid.

    One Axes showing one mosaic of all the images, captions as text: an Axes per image (ticks, spines, a layout
    pass) made the 32 training samples, drawn before the first training step, cost ~1 s; this takes ~0.2 s.
    """
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    width, height = 1.6 * columns, 1.9 * rows + 0.4  # inches: a 1.6 x 1.9 cell per image, 0.4 for the title
    pixels = images.detach().float().clamp(0, 1).cpu()
    h, w = pixels.shape[-2:]
    ppi = max(h, w) / 1.45  # mosaic pixels per inch: each image's longer side spans 1.45 inches
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    caption_height = 0.14 * lines + 0.08  # inches above each image
    mosaic = torch.ones(pixels.shape[1], round(height * ppi), round(width * ppi))  # white background
    fig = Figure(figsize=(width, height), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    for i, (image, caption) in enumerate(zip(pixels, captions, strict=False)):
        row, column = divmod(i, columns)
        center, top = 1.6 * column + 0.8, 0.4 + 1.9 * row + caption_height  # inches from the top left
        y, x = round(top * ppi), round(center * ppi - w / 2)
        mosaic[:, y : y + h, x : x + w] = image
        ax.text(center, top - 0.03, caption, ha="center", va="bottom", fontsize=7)
    grey = mosaic.shape[0] == 1
    ax.imshow((mosaic[0] if grey else mosaic.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1,
              extent=(0, width, height, 0), aspect="auto")  # fmt: skip
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.text(width / 2, 0.22, title, ha="center", va="center", fontsize=9)
    return fig
