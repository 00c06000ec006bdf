"""The quickstart notebook runs top to bottom and its model really learned."""

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
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    test_acc = float(outputs.split("test/acc ")[1].split()[0])
    assert test_acc > 0.9  # four epochs on digits; an untrained model scores about 0.1
    assert outputs.count("true ") == 5  # five top-3 predictions printed
    assert (tmp_path / "logs" / "notebook").is_dir()
