"""Side-by-side timings on Fashion-MNIST, printed as a table (figures go into README's Benchmarks section).

1. Data time per epoch: the template's in-memory fast path (decoded once, one tensor index per batch, batch
   normalisation) vs the classic ``torchvision.datasets.FashionMNIST`` + ``ToTensor`` + ``Normalize`` + DataLoader.
2. One training epoch of ``configs/cnn.yaml`` and ``configs/fc.yaml`` through the template (LightningCLI, Trainer,
   metrics, logging) vs a plain PyTorch loop: same network, initialisation, batch size, optimiser and pre-loaded
   tensors. The FC net is the tight case: little compute per step, so any per-step overhead shows.

    python -m benchmarks.fashion_mnist --data-dir DIR
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, default_convert
from torchvision import datasets, transforms
from torchvision.transforms import v2

from src.data.torchvision_datasets import FashionMNISTDataModule
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
    """Wall and CPU time of the training epoch (first epoch start to its end), as the plain loop measures them."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seconds, self.cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start


def _template(config: str, data_dir: Path, run_dir: str, *overrides: str) -> Any:
    """``configs/<config>`` on Fashion-MNIST, built by the template's CLI without running anything."""
    configs = ROOT / "configs"
    return cli_main(
        [
            "--config", str(configs / config), "--data", str(configs / "data" / "fashion_mnist.yaml"),
            f"--data.data_dir={data_dir}", f"--trainer.logger.init_args.save_dir={run_dir}",
            f"--trainer.default_root_dir={run_dir}", *overrides,
        ],
        run=False,
    )  # fmt: skip


class Side(NamedTuple):
    """One side's time for one epoch: wall-clock seconds and CPU seconds (all threads) of this process."""

    seconds: float
    cpu: float


class Setup(NamedTuple):
    """What every side trains: the template's network, its initial weights, data module and learning rate."""

    net: torch.nn.Module
    initial: dict[str, torch.Tensor]
    dm: FashionMNISTDataModule
    lr: float


def _setup(cli: Any) -> Setup:
    """The network and data a CLI built, the weights it starts from and the learning rate its config gives."""
    initial = {k: v.clone() for k, v in cli.model.net.state_dict().items()}
    lr = float(cli.config["model"]["optimizer"]["init_args"]["lr"])
    return Setup(cli.model.net, initial, cli.datamodule, lr)


def train_epoch_template(config: str, data_dir: Path, run_dir: str, progress_bar: bool = False) -> tuple[Side, Setup]:
    """One epoch through the template: its config, callbacks, metrics and TensorBoard logging (no validation).

    Returns its time and the setup, the network reset to its initial weights, for the other sides to train.
    """
    cli = _template(
        config, data_dir, run_dir, "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
        f"--trainer.enable_progress_bar={str(progress_bar).lower()}", "--trainer.enable_model_summary=false",
    )  # fmt: skip
    timer = EpochTimer()
    cli.trainer.callbacks.insert(0, timer)
    setup = _setup(cli)
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.model.net.load_state_dict(setup.initial)  # the other sides start from the same weights
    return Side(timer.seconds, timer.cpu), setup


def _fresh_setup(config: str, data_dir: Path, run_dir: str) -> Setup:
    """The template's initial network and data, without training (for running another side first)."""
    cli = _template(config, data_dir, run_dir)
    cli.datamodule.setup("fit")
    return _setup(cli)


def train_epoch_plain(setup: Setup) -> Side:
    """The same epoch by hand: shuffle, scale the uint8 images, normalise, forward, cross-entropy, backward, Adam."""
    net, _, dm, lr = setup
    net.load_state_dict(setup.initial)
    images, labels = dm.train_set.tensors
    normalize = v2.Normalize(dm.mean, dm.std)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in torch.randperm(len(labels)).split(dm.batch_size):
        optimizer.zero_grad()
        loss = loss_fn(net(normalize(v2.functional.to_dtype(images[batch], torch.float32, scale=True))), labels[batch])
        loss.backward()
        optimizer.step()
    return Side(time.perf_counter() - start, time.process_time() - cpu_start)


class BareModule(LightningModule):
    """The plain loop's step as a minimal LightningModule: no metrics, no logging, no preprocessing module."""

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        self.net, self.lr = setup.net, setup.lr
        self.normalize = v2.Normalize(setup.dm.mean, setup.dm.std)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        pixels = v2.functional.to_dtype(images, torch.float32, scale=True)
        return F.cross_entropy(self.net(self.normalize(pixels)), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def train_epoch_lightning(setup: Setup, run_dir: str) -> Side:
    """The floor under any Lightning template: the plain step in a bare ``Trainer`` (no logger, callbacks, metrics,
    checkpoints or progress bar), batches from the same in-memory tensors."""
    setup.net.load_state_dict(setup.initial)
    loader = DataLoader(setup.dm.train_set, batch_size=setup.dm.batch_size, shuffle=True, collate_fn=default_convert)
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=1, logger=False, callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=run_dir,
    )  # fmt: skip
    trainer.fit(BareModule(setup), loader)
    setup.net.load_state_dict(setup.initial)
    return Side(timer.seconds, timer.cpu)


def per_epoch_ratio(config: str, data_dir: Path, repeats: int = 3, lightning_floor: bool = False) -> dict[str, Any]:
    """One training epoch of ``configs/<config>`` through the template vs the plain loop (and, with
    ``lightning_floor``, a bare Lightning ``Trainer``), best of ``repeats`` each, alternating which side runs first:
    same network object and initial weights, batch size, Adam lr and tensors."""
    runs: dict[str, list[Side]] = {"template": [], "plain": [], "lightning": []}
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as run_dir:
            if repeat % 2:  # alternate which side runs first, so neither always gets the warmer machine
                setup = _fresh_setup(config, data_dir, run_dir)
                if lightning_floor:
                    runs["lightning"].append(train_epoch_lightning(setup, run_dir))
                runs["plain"].append(train_epoch_plain(setup))
            side, setup = train_epoch_template(config, data_dir, run_dir)
            runs["template"].append(side)
            if not repeat % 2:
                runs["plain"].append(train_epoch_plain(setup))
                if lightning_floor:
                    runs["lightning"].append(train_epoch_lightning(setup, run_dir))
    result: dict[str, Any] = {"config": config, "images": len(setup.dm.train_set), "repeats": repeats}
    for name, sides in runs.items():
        if sides:
            result[f"{name}_s"] = min(s.seconds for s in sides)
            result[f"{name}_cpu_s"] = min(s.cpu for s in sides)
            result[f"{name}_runs"] = [round(s.seconds, 3) for s in sides]
    result["ratio"] = result["template_s"] / result["plain_s"]
    result["cpu_ratio"] = result["template_cpu_s"] / result["plain_cpu_s"]
    return result


def per_epoch_row(result: dict[str, Any]) -> str:
    """A README table row for ``per_epoch_ratio``'s result (the bare Lightning floor in brackets, if measured)."""
    floor = f" (bare Lightning: {result['lightning_s']:.2f} s)" if "lightning_s" in result else ""
    return (
        f"| one training epoch, {result['config']} ({result['images'] // 1000}k images) | {result['plain_s']:.2f} s "
        f"| {result['template_s']:.2f} s{floor} | **{result['ratio']:.3f}** (CPU time {result['cpu_ratio']:.3f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each side, alternating the order")
    parser.add_argument("--configs", nargs="+", default=["cnn.yaml", "fc.yaml"], help="model configs to train")
    args = parser.parse_args()

    dm = FashionMNISTDataModule(data_dir=str(args.data_dir))
    dm.prepare_data()
    start = time.perf_counter()
    dm.setup("fit")
    decode = time.perf_counter() - start
    tv = min(data_epoch_torchvision(dm._root()) for _ in range(args.repeats))
    fast = min(data_epoch_template(dm) for _ in range(args.repeats))
    tv_us, fast_us = tv[0] / tv[1] * 1e6, fast[0] / fast[1] * 1e6

    epochs = [per_epoch_ratio(config, args.data_dir, args.repeats, config == "fc.yaml") for config in args.configs]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| measurement | plain / torchvision | template | ratio |")
    print("|---|---|---|---|")
    print(
        f"| data time per epoch (60k images) | {tv_us * 60000 / 1e6:.2f} s | {fast_us * 60000 / 1e6:.3f} s "
        f"(+ {decode:.1f} s decode once) | **{tv_us / fast_us:.0f}x faster** |"
    )
    for result in epochs:
        print(per_epoch_row(result))


if __name__ == "__main__":
    main()
