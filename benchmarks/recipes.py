"""Time to a good model on Fashion-MNIST: the modern recipes against the seed tutorial and a plain loop.

(a) Time to 90 % test accuracy: ``configs/fast.yaml`` through the CLI (the whole ``fit`` command, start-up
    included) vs the seed tutorial's loop (torchvision dataset, batch 4, SGD 1e-3, LeNet-5 variant) vs a plain
    PyTorch script with the same network and recipe as ``fast.yaml``. Each runs as its own process, timed from its
    start; the plain sides stop their clock while they measure test accuracy after each epoch.
(b) ``configs/resnet.yaml`` (with the augmentation and test-time flips it was tuned with): wall time of ``fit``
    and the test accuracy of its final checkpoint.
(c) One training epoch through the template vs a plain loop, ``configs/cnn.yaml`` and ``configs/fc.yaml`` (the tight
    case), from ``benchmarks.fashion_mnist``.
(d) Start-up: ``python -m src.train fit`` until its first training step vs a plain script, from
    ``benchmarks.overhead``.

    python -m benchmarks.recipes --data-dir DIR            # all four, about 30 minutes
    python -m benchmarks.recipes --data-dir DIR --parts cd # one part or several
"""

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The flags each recipe's header gives for Fashion-MNIST: the batch size fast.yaml was tuned with; the augmentation
#: and test-time flips resnet.yaml was tuned with.
FAST_FASHION = ["--data.batch_size=128"]
RESNET_FASHION = [
    "--data.batch_size=128",
    "--data.random_crop_padding=2",
    "--data.random_hflip=true",
    "--model.tta_hflip=true",
]
#: Printed by the plain sides: ``RESULT <epoch> <seconds so far> <test accuracy>``.
MARK = "RESULT"


def fit_command(config: str, data_dir: Path, run_dir: str, *overrides: str) -> list[str]:
    """``python -m src.train fit`` on Fashion-MNIST, as a user types it (progress bar off: a log, not a TTY)."""
    return [
        sys.executable, "-m", "src.train", "fit", "--config", f"configs/{config}",
        "--data", "configs/data/fashion_mnist.yaml", f"--data.data_dir={data_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}", "--trainer.enable_progress_bar=false", *overrides,
    ]  # fmt: skip


def test_accuracy(checkpoint: Path, data_dir: Path) -> float:
    """Test accuracy of a checkpoint on the 10k Fashion-MNIST test images (its own preprocessing and TTA)."""
    import torch

    from src.data.torchvision_datasets import FashionMNISTDataModule
    from src.models.classifier import ImageClassifier

    dm = FashionMNISTDataModule(data_dir=str(data_dir), download=False)
    dm.setup("test")
    images, labels = dm.test_set.tensors
    model = ImageClassifier.from_checkpoint(checkpoint)
    with torch.inference_mode():
        predicted = torch.cat([model(batch).argmax(1) for batch in images.split(1000)])
    return (predicted == labels).float().mean().item()


def run_template(config: str, data_dir: Path, *overrides: str) -> dict[str, Any]:
    """Wall time of the whole ``fit`` command, then the test accuracy of the checkpoint it ends with."""
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        subprocess.run(fit_command(config, data_dir, run_dir, *overrides), cwd=ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        last = next(Path(run_dir).glob("*/version_0/checkpoints/last.ckpt"))
        return {"seconds": seconds, "test_acc": test_accuracy(last, data_dir)}


def run_plain(side: str, data_dir: Path, max_epochs: int, budget_s: float) -> dict[str, Any]:
    """A plain script (``seed`` or ``plain``) in its own process: seconds to first reach 90 % test accuracy."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "benchmarks.recipes", "--side", side, "--data-dir", str(data_dir),
               "--max-epochs", str(max_epochs), "--budget", str(budget_s)]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    curve = [
        (int(e), float(s), float(a))
        for _, e, s, a in (line.split() for line in out.splitlines() if line.startswith(MARK))
    ]
    reached = next((s for _, s, a in curve if a >= 0.90), None)
    return {"seconds": reached, "curve": curve, "total": time.perf_counter() - start}


# ---- the plain sides, run as their own processes (`--side`) ----


def seed_tutorial(data_dir: Path, max_epochs: int, budget_s: float, start: float) -> None:
    """The seed tutorial's training loop as written: torchvision dataset with ToTensor + Normalize(0.5, 0.5),
    batch 4, shuffled, the LeNet-5 variant ``GarmentClassifier``, SGD lr 0.001 momentum 0.9, cross-entropy."""
    import torch
    import torchvision
    from torch import nn
    from torch.nn import functional as F
    from torchvision import transforms

    class GarmentClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.pool, self.conv2 = nn.Conv2d(1, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 4 * 4, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 16 * 4 * 4))))))

    from src.data.torchvision_datasets import FashionMNISTDataModule

    dm = FashionMNISTDataModule(data_dir=str(data_dir), download=False)
    dm.prepare_data()  # torchvision reads the extracted idx files: the template extracts them once (from the .gz)
    root = str(dm._root())
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = torchvision.datasets.FashionMNIST(root, train=True, transform=transform)
    test = torchvision.datasets.FashionMNIST(root, train=False, transform=transform)
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True)
    model = GarmentClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    paused = 0.0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), labels).backward()
            optimizer.step()
        clock = time.perf_counter()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in torch.utils.data.DataLoader(test, 1000))
        print(f"{MARK} {epoch} {clock - start - paused:.2f} {correct / len(test):.4f}", flush=True)
        paused += time.perf_counter() - clock
        if correct / len(test) >= 0.90 or clock - start - paused > budget_s:
            return


def plain_fast(data_dir: Path, max_epochs: int, budget_s: float, start: float) -> None:
    """``fast.yaml``'s network and recipe by hand, read from the YAML (network arguments, SGD, OneCycle, label
    smoothing, epochs) and batch size 128 as its header says: channels-last, weight decay except on 1-D parameters,
    OneCycle stepped per batch, on the same uint8 tensors and 54k/6k train/val split (no validation here)."""
    import torch
    from torch.nn import functional as F

    from src.data.torchvision_datasets import FashionMNISTDataModule
    from src.models.networks import ResNet

    model = fast_config()["model"]
    sgd, one_cycle = model["optimizer"]["init_args"], model["scheduler"]["init_args"]
    batch_size = int(FAST_FASHION[0].split("=")[1])
    torch.manual_seed(42)
    dm = FashionMNISTDataModule(data_dir=str(data_dir), download=False)
    dm.setup("fit")
    dm.setup("test")
    images, labels = dm.train_set.tensors
    test_images, test_labels = dm.test_set.tensors
    mean, std = dm.mean[0], dm.std[0]
    net = ResNet((1, 28, 28), 10, **model["network"]["init_args"]).to(memory_format=torch.channels_last)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], **sgd)
    steps = max_epochs * math.ceil(len(labels) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, total_steps=steps, **one_cycle)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

    paused = 0.0
    for epoch in range(1, max_epochs + 1):
        net.train()
        for batch in torch.randperm(len(labels)).split(batch_size):
            out = net(prepare(images[batch]))
            loss = F.cross_entropy(out, labels[batch], label_smoothing=model["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        clock = time.perf_counter()
        net.eval()
        with torch.no_grad():
            correct = sum(
                (net(prepare(x)).argmax(1) == y).sum().item()
                for x, y in zip(test_images.split(1000), test_labels.split(1000), strict=True)
            )
        print(f"{MARK} {epoch} {clock - start - paused:.2f} {correct / len(test_labels):.4f}", flush=True)
        paused += time.perf_counter() - clock


def fast_config() -> dict[str, Any]:
    """``configs/fast.yaml`` as committed: the plain side trains its recipe for its epochs."""
    import yaml

    return yaml.safe_load((ROOT / "configs" / "fast.yaml").read_text())


def time_to_90(data_dir: Path, seed_budget_s: float = 300.0) -> dict[str, Any]:
    """(a): the three sides, one after another."""
    return {
        "fast.yaml": run_template("fast.yaml", data_dir, *FAST_FASHION),
        "plain": run_plain("plain", data_dir, max_epochs=int(fast_config()["trainer"]["max_epochs"]), budget_s=1e9),
        "seed": run_plain("seed", data_dir, max_epochs=20, budget_s=seed_budget_s),
    }


def resnet(data_dir: Path) -> dict[str, Any]:
    """(b): ``resnet.yaml`` as its header says to run it on Fashion-MNIST."""
    return run_template("resnet.yaml", data_dir, *RESNET_FASHION)


def rows(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """README table rows for (a) and (b)."""
    out = []
    if a:
        fast, plain, seed = a["fast.yaml"], a["plain"], a["seed"]
        epoch, seconds, accuracy = seed["curve"][-1]
        seed_s = f"{seed['seconds']:.0f} s" if seed["seconds"] is not None else "not reached"
        plain_s = f"{plain['seconds']:.1f} s" if plain["seconds"] is not None else "not reached"
        out += [
            f"| (a) time to 90 % test: `fit --config configs/fast.yaml --data.batch_size 128`, start-up included | "
            f"**{fast['seconds']:.1f} s** (test acc {fast['test_acc']:.4f}) |",
            f"| (a) the same network and recipe, plain PyTorch script | {plain_s} "
            f"(test acc {plain['curve'][-1][2]:.4f} after {plain['curve'][-1][0]} epochs) |",
            f"| (a) the seed tutorial's loop (batch 4, SGD 1e-3) | {seed_s} "
            f"(test acc {accuracy:.4f} after {epoch} epochs, {seconds:.0f} s) |",
        ]
    if b:
        out.append(
            f"| (b) `fit --config configs/resnet.yaml --data.batch_size 128` (crop, flip, flip TTA) | "
            f"{b['seconds'] / 60:.1f} min, test acc **{b['test_acc']:.4f}** |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. abcd, a, cd")
    parser.add_argument("--seed-budget", type=float, default=300.0, help="seconds the seed tutorial may train")
    parser.add_argument("--repeats", type=int, default=3, help="(c), (d): best of N, alternating the order")
    parser.add_argument("--side", choices=["seed", "plain"], help=argparse.SUPPRESS)  # a plain side's own process
    parser.add_argument("--max-epochs", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=1e9, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side = seed_tutorial if args.side == "seed" else plain_fast
        side(args.data_dir, args.max_epochs, args.budget, start=START)
        return
    import torch

    lines = []
    if "a" in args.parts or "b" in args.parts:
        a = time_to_90(args.data_dir, args.seed_budget) if "a" in args.parts else None
        b = resnet(args.data_dir) if "b" in args.parts else None
        lines += ["| measurement | result |", "|---|---|", *rows(a, b), ""]
    if "c" in args.parts or "d" in args.parts:
        lines += ["| measurement | plain | template | ratio |", "|---|---|---|---|"]
    if "c" in args.parts:
        from benchmarks.fashion_mnist import per_epoch_ratio, per_epoch_row

        for config in ("cnn.yaml", "fc.yaml"):
            lines.append(per_epoch_row(per_epoch_ratio(config, args.data_dir, args.repeats, config == "fc.yaml")))
    if "d" in args.parts:
        from benchmarks.overhead import startup, startup_rows

        lines += startup_rows(startup(args.data_dir, args.repeats))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; (c), (d) best of {args.repeats}")
    print("\n".join(lines))


START = time.perf_counter()  # a plain side's clock starts with its process (imports included, as for the CLI)

if __name__ == "__main__":
    main()
