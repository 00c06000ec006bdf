"""The template's start-up job done by hand: import torch and torchvision, read the Fashion-MNIST idx files into
tensors, build the same CNN (Kaiming init), Adam, and begin the first training step.

    python -m benchmarks.plain_startup RAW_DIR    # prints "FIRST_STEP_PROBE first_step <time.time()>"
"""

import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  (the template's data and model code import it too)
from torch import nn

MARK = "FIRST_STEP_PROBE"


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST family) as a uint8 tensor; the extracted file if there, else the ``.gz``."""
    data = path.read_bytes() if path.is_file() else gzip.decompress(path.with_name(path.name + ".gz").read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy())


def cnn() -> nn.Module:
    """``configs/cnn.yaml``'s SimpleCNN on 1x28x28: conv5x5(32) → ReLU → maxpool → conv3x3(64) → ReLU → FC."""
    net = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 14 * 14, 128), nn.ReLU(inplace=True),
        nn.Dropout(0.25), nn.Linear(128, 10),
    )  # fmt: skip
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return net


def main() -> None:
    raw = Path(sys.argv[1])
    torch.manual_seed(42)
    images = read_idx(raw / "train-images-idx3-ubyte").unsqueeze(1)
    labels = read_idx(raw / "train-labels-idx1-ubyte").long()
    net = cnn()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = torch.randperm(len(labels))[:64]
    x = (images[batch].float() / 255 - 0.2860) / 0.3530
    print(f"{MARK} first_step {time.time():.6f}", flush=True)
    loss = nn.functional.cross_entropy(net(x), labels[batch])
    loss.backward()
    optimizer.step()


if __name__ == "__main__":
    main()
