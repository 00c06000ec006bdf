"""Shared test helpers: run the CLI in-process inside a temporary working directory, shrunk for speed."""

import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

#: Quiet, small runs: the tests check behaviour, not throughput.
FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """``run_cli(subcommand, config, *overrides)`` runs ``python -m src.train`` in-process in ``tmp_path``
    (``config=""``: no ``--config``, e.g. predicting from a checkpoint alone)."""
    monkeypatch.chdir(tmp_path)

    def run(subcommand: str, config: str | Path = "cnn.yaml", *overrides: str):
        config_path = Path(config) if Path(config).is_absolute() else CONFIGS / config
        config_args = ["--config", str(config_path)] if str(config) else []
        return cli_main([subcommand, *config_args, *FAST, *overrides])

    return run


def kill_at_stall(script: str, args: list[str], workdir: Path) -> None:
    """Run ``tests/<script> args`` in a fresh process in ``workdir``; SIGKILL it once it writes ``workdir/stalled``
    (its stall point: see tests/killable.py), as a crash or ``kill -9`` would stop it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / script), *args],
                               cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 180
    while not (workdir / "stalled").exists():
        if process.poll() is not None:
            pytest.fail(f"{script} ended before its stall point: {process.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"{script} never reached its stall point"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture
def shared_datasets() -> Path:
    """The real datasets beside the project; tests that need them skip cleanly without them."""
    if not (SHARED_DATASETS / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the MNIST family (gzip-compressed if the name ends in .gz)."""
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    data = header + tensor.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def fake_fashion_mnist(tmp_path: Path) -> Path:
    """Tiny Fashion-MNIST and MNIST in torchvision's raw layout (random pixels, every class present)."""
    root = tmp_path / "fake_datasets"
    gen = torch.Generator().manual_seed(0)
    for name in ("FashionMNIST", "MNIST"):
        for prefix, n in (("train", 200), ("t10k", 50)):
            raw = root / name / "raw"
            write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=gen))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of small PNG and JPEG images of mixed sizes, grey and RGB, in class folders."""
    from PIL import Image

    root = tmp_path / "images"
    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(["circle", "square", "triangle"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            channels, size = (1, 20) if i % 3 == 0 else (3, 40)
            pixels = (torch.rand(size, size, channels, generator=gen) * 80 + c * 80).to(torch.uint8).numpy()
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(
                root / name / f"{i}.{'png' if i % 2 else 'jpg'}"
            )
    return root


@pytest.fixture
def array_file(tmp_path: Path) -> Path:
    """An .npz of 60 RGB 12x12 channels-last uint8 images in 3 classes, with class names."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    images = (rng.random((60, 12, 12, 3)) * 80 + labels[:, None, None, None] * 80).astype(np.uint8)
    path = tmp_path / "arrays.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["low", "mid", "high"]))
    return path


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny CIFAR-10 in torchvision's pickled layout (5 x 20 training + 20 test images, every class present).

    torchvision checks each batch file's MD5; the fake files' checksums are patched in for this test only.
    """
    import hashlib
    import pickle

    import numpy as np
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "fake_cifar" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def write(name: str, content: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(content))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(name: str) -> list[str]:
        return write(name, {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2})

    monkeypatch.setattr(CIFAR10, "train_list", [batch(f"data_batch_{i}") for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [batch("test_batch")])
    _, md5 = write("batches.meta", {"label_names": CIFAR10_CLASSES})
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5})
    return folder.parent
