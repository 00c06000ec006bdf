"""README's "Add your own network" and "Add your own dataset", done exactly as written.

The files and the command come from the README's own fenced blocks (a ```python or ```yaml block names its file on
its first line, ``# my_nets.py``; the ```bash block is the command), so the README and this test cannot drift apart.
They run in a temporary copy of the project's layout (``configs/`` copied, the user's files written beside it), in
process, with the run shrunk to a few batches.
"""

import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from src.train import cli_main
from tests.conftest import CONFIGS, FAST, ROOT

README = ROOT / "README.md"
#: A few batches of one epoch: the steps are checked, not the accuracy.
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]


def readme_section(title: str) -> str:
    """The text of README's ``## <title>`` section, up to the next ``## `` heading."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def concepts(section: str) -> list[str]:
    """The section's numbered list: what a reader must know, at most 3 items."""
    items = re.findall(r"^\d+\. (.*)$", section, re.M)
    assert 1 <= len(items) <= 3, f"a README 'Add your own' section lists 1 to 3 concepts, got {len(items)}"
    return items


def fenced_blocks(section: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced code block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.M | re.S)


def write_files(blocks: list[tuple[str, str]], root: Path) -> list[str]:
    """Write each python/yaml block to the path its first line names (``# my_nets.py``); return those paths."""
    written = []
    for language, body in blocks:
        if language not in ("python", "yaml"):
            continue
        first = body.splitlines()[0]
        assert first.startswith("# "), f"a README {language} block must name its file on line 1, got {first!r}"
        path = first[2:].strip()
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
        written.append(path)
    return written


def the_command(blocks: list[tuple[str, str]]) -> list[str]:
    """The arguments of the section's one ``python -m src.train`` command (its bash block)."""
    commands = [
        shlex.split(line, comments=True)
        for language, body in blocks
        if language == "bash"
        for line in body.splitlines()
        if line.startswith("python -m src.train ")
    ]
    assert len(commands) == 1, f"expected one `python -m src.train` command, got {commands}"
    return commands[0][3:]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project root: the repository's configs/, the working directory, and importable like the real root
    (``python -m`` puts the current directory on ``sys.path``). The user's modules are forgotten afterwards."""
    shutil.copytree(CONFIGS, tmp_path / "configs")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("my_"):
            del sys.modules[name]


def the_run(project: Path) -> Path:
    runs = sorted(project.glob("logs/*/version_*"))
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "config.yaml").is_file()
    return run


def test_add_your_own_network(project: Path) -> None:
    section = readme_section("Add your own network")
    concepts(section)
    blocks = fenced_blocks(section)
    assert write_files(blocks, project) == ["my_nets.py", "configs/my_net.yaml"]  # one file, one YAML
    cli = cli_main([*the_command(blocks), *FAST, *SHORT])  # the command
    assert type(cli.model.net).__module__ == "my_nets" and type(cli.model.net).__name__ == "MyNet"
    run = the_run(project)
    assert run.parent.name == "my_net"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["network"]["class_path"] == "my_nets.MyNet"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["network"]["class_path"] == "my_nets.MyNet"


def test_add_your_own_dataset(project: Path) -> None:
    from sklearn.datasets import load_digits

    # The user's data: scikit-learn's digits as a Kaggle-style CSV (label, then 64 pixels 0-255).
    digits = load_digits()
    pixels = np.round(digits.data * 255 / 16).astype(int)
    header = "label," + ",".join(f"pixel{i}" for i in range(pixels.shape[1]))
    rows = np.column_stack([digits.target, pixels])
    np.savetxt(project / "data" / "train.csv", rows, fmt="%d", delimiter=",", header=header, comments="")

    section = readme_section("Add your own dataset")
    concepts(section)
    blocks = fenced_blocks(section)
    assert write_files(blocks, project) == ["my_data.py", "configs/data/my_csv.yaml"]  # one file, one YAML
    cli = cli_main([*the_command(blocks), *FAST, *SHORT])  # the command
    data = cli.datamodule
    assert type(data).__module__ == "my_data" and type(data).__name__ == "CsvImages"
    assert data.input_shape == (1, 8, 8) and data.class_names == [str(d) for d in range(10)]
    run = the_run(project)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["class_path"] == "my_data.CsvImages"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["class_names"] == data.class_names
    # Statistics measured on the training split (not the base's placeholders), linked into the model.
    assert 0.2 < data.mean[0] < 0.4 and 0.3 < data.std[0] < 0.5
    assert tuple(checkpoint["hyper_parameters"]["input_mean"]) == tuple(data.mean)
