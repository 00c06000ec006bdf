"""Side-by-side timings on Fashion-MNIST, printed as a table (figures go into README's Benchmarks section).

1. Data time per epoch: the template's in-memory fast path (decoded once, one tensor index per batch, batch
   normalisation) vs the classic ``torchvision.datasets.FashionMNIST`` + ``ToTensor`` + ``Normalize`` + DataLoader.
2. One training epoch of ``configs/cnn.yaml`` through the template (LightningCLI, Trainer, metrics, logging) vs a
   plain PyTorch loop: same network, initialisation, batch size, optimiser and pre-loaded tensors.

    python -m benchmarks.fashion_mnist --data-dir ../shared/datasets
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from lightning import Callback
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.transforms import v2

from src.data import FashionMNISTDataModule
from src.train import cli_main

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose


def data_epoch_torchvision(root: Path) -> tuple[float, int]:
    """Seconds for one pass over the training images, the classic per-sample PIL pipeline."""
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    dataset = datasets.FashionMNIST(str(root), train=True, transform=pipeline)
    start = time.perf_counter()
    for _images, _labels in DataLoader(dataset, batch_size=64, shuffle=True):
        pass
    return time.perf_counter() - start, len(dataset)


def data_epoch_template(dm: FashionMNISTDataModule) -> tuple[float, int]:
    """Seconds for one pass over the template's training split, uint8 -> float and normalisation included."""
    normalize = v2.Normalize(dm.mean, dm.std)
    start = time.perf_counter()
    for images, _labels in dm.train_dataloader():
        normalize(v2.functional.to_dtype(images, torch.float32, scale=True))
    return time.perf_counter() - start, len(dm.train_set)


class EpochTimer(Callback):
    """Wall time of the training epoch (first epoch start to its end), as the plain loop measures it."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def _template(data_dir: Path, run_dir: str, *overrides: str):
    """``configs/cnn.yaml`` on Fashion-MNIST, built by the template's CLI without running anything."""
    configs = ROOT / "configs"
    return cli_main(
        [
            "--config", str(configs / "cnn.yaml"), "--data", str(configs / "data" / "fashion_mnist.yaml"),
            f"--data.data_dir={data_dir}", f"--trainer.logger.init_args.save_dir={run_dir}",
            f"--trainer.default_root_dir={run_dir}", *overrides,
        ],
        run=False,
    )  # fmt: skip


def train_epoch_template(data_dir: Path, run_dir: str) -> tuple[float, torch.nn.Module, FashionMNISTDataModule]:
    """One epoch through the template: its config, callbacks, metrics and TensorBoard logging (no validation)."""
    cli = _template(
        data_dir, run_dir, "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    )  # fmt: skip
    timer = EpochTimer()
    cli.trainer.callbacks.insert(0, timer)
    initial = {k: v.clone() for k, v in cli.model.net.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.model.net.load_state_dict(initial)  # the plain loop starts from the same weights
    return timer.seconds, cli.model.net, cli.datamodule


def _fresh_net(data_dir: Path, run_dir: str) -> tuple[torch.nn.Module, FashionMNISTDataModule]:
    """The template's initial network and data, without training (for running the plain loop first)."""
    cli = _template(data_dir, run_dir)
    cli.datamodule.setup("fit")
    return cli.model.net, cli.datamodule


def train_epoch_plain(net: torch.nn.Module, dm: FashionMNISTDataModule, batch_size: int = 64) -> float:
    """The same epoch by hand: shuffle, scale the uint8 images, normalise, forward, cross-entropy, backward, Adam."""
    images, labels = dm.train_set.tensors
    normalize = v2.Normalize(dm.mean, dm.std)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    start = time.perf_counter()
    for batch in torch.randperm(len(labels)).split(batch_size):
        optimizer.zero_grad()
        loss = loss_fn(net(normalize(v2.functional.to_dtype(images[batch], torch.float32, scale=True))), labels[batch])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each side, alternating the order")
    args = parser.parse_args()

    dm = FashionMNISTDataModule(data_dir=str(args.data_dir))
    dm.prepare_data()
    start = time.perf_counter()
    dm.setup("fit")
    decode = time.perf_counter() - start
    tv = min(data_epoch_torchvision(dm._root()) for _ in range(args.repeats))
    fast = min(data_epoch_template(dm) for _ in range(args.repeats))
    tv_us, fast_us = tv[0] / tv[1] * 1e6, fast[0] / fast[1] * 1e6

    template_s, plain_s = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as run_dir:
            if repeat % 2:  # alternate which side runs first, so neither always gets the warmer machine
                initial_plain = train_epoch_plain(*_fresh_net(args.data_dir, run_dir))
            seconds, net, cli_dm = train_epoch_template(args.data_dir, run_dir)
        template_s.append(seconds)
        plain_s.append(initial_plain if repeat % 2 else train_epoch_plain(net, cli_dm))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| measurement | plain / torchvision | template | ratio |")
    print("|---|---|---|---|")
    print(
        f"| data time per epoch (60k images) | {tv_us * 60000 / 1e6:.2f} s | {fast_us * 60000 / 1e6:.3f} s "
        f"(+ {decode:.1f} s decode once) | **{tv_us / fast_us:.0f}x faster** |"
    )
    print(
        f"| one training epoch, cnn.yaml (54k images) | {min(plain_s):.1f} s | {min(template_s):.1f} s "
        f"| **{min(template_s) / min(plain_s):.3f}** |"
    )


if __name__ == "__main__":
    main()
