"""Real Fashion-MNIST from the shared datasets (skipped when absent): train briefly, then test in a new process."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION_CLASSES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.mark.slow
def test_cnn_on_real_fashion_mnist_then_test_in_new_process(run_cli, shared_datasets: Path, tmp_path: Path) -> None:
    cli = run_cli(
        "fit", "cnn.yaml", "--data", str(CONFIGS / "data" / "fashion_mnist.yaml"),
        f"--data.data_dir={shared_datasets}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=150",
        "--trainer.limit_val_batches=40",  # 2,560 of the 6,000 val images: still within about 1 % of the whole
    )  # fmt: skip
    best_score = cli.trainer.checkpoint_callback.best_model_score.item()
    assert best_score > 0.75  # 150 steps of real learning; chance is 0.10
    run_dir = Path(cli.trainer.log_dir)
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))

    result = subprocess.run(
        [sys.executable, "-m", "src.train", "test", "--config", str(run_dir / "config.yaml"),
         f"--ckpt_path={best}", "--trainer.enable_progress_bar=false", "--trainer.limit_test_batches=40"],
        cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in FASHION_CLASSES:
        assert f"test/acc_per_class/{name} " in result.stdout
    test_acc = float(next(line.split()[1] for line in result.stdout.splitlines() if "test/acc " in line))
    assert abs(test_acc - best_score) < 0.05  # test set behaves like the val split (2,560 images each: 4 sigma)
