"""The quickstart notebook runs top to bottom, its model really learned, and it shows its figures."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}  # the kernel's working directory
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    all_outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    outputs = "".join(o.get("text", "") for o in all_outputs)
    test_acc = float(outputs.split("test/acc ")[1].split()[0])
    assert test_acc > 0.9  # four epochs on digits; an untrained model scores about 0.1
    predictions = re.findall(r"^true (\S+): (\S+) \(", outputs, flags=re.MULTILINE)
    assert len(predictions) == outputs.count("true ") == 5  # five image files, one top-3 line each
    assert sum(true == top1 for true, top1 in predictions) >= 4
    images = [o for o in all_outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # training-sample grid, per-class accuracy bars, confusion matrix
    assert (tmp_path / "logs" / "notebook").is_dir()
    assert len(list((tmp_path / "predict_images").glob("*.png"))) == 5
