"""Export a checkpoint for deployment without this template: ONNX (onnxruntime, TensorRT, ...) and torch.export.
Both are ``ImageClassifier.forward`` traced on ``images``, float32 (N, C, H, W) in [0, 1] at the trained size, any N,
returning ``logits`` (N, classes): normalisation is inside. ``labels.json`` and ``input_spec.json`` go beside them."""

import importlib.util
import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from src.checkpoint_io import run_dir_of
from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.models.preprocess import InputSpec, Preprocess

INPUT_NAME, OUTPUT_NAME = "images", "logits"
FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "labels": "labels.json", "spec": "input_spec.json"}
INSTALL = "pip install -e '.[export]'"


def _check_output(output: Path, onnx: bool, pt2: bool) -> None:
    """Nothing is overwritten, and nothing is started that cannot finish."""
    if not (onnx or pt2):
        raise UserError("nothing to export: --onnx and --pt2 are both false.")
    if output.is_file():
        raise UserError(f"--output {output} is a file; pass a folder for the exported files.")
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"--output {output} already exists and is not empty; pass another --output (nothing is lost).")
    missing = [name for name in ("onnx", "onnxscript") if onnx and importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"exporting to ONNX needs {' and '.join(missing)}: {INSTALL} (or --onnx false for model.pt2).")


def export_model(model: ImageClassifier, output: str | Path, onnx: bool = True, pt2: bool = True) -> dict[str, Path]:
    """The exports of ``model`` (to the CPU, float32, eval mode) in the new or empty folder ``output``, by kind. Written
    into a temporary sibling renamed at the end: a failed export leaves nothing a rerun would refuse to overwrite."""
    output = Path(output)
    _check_output(output, onnx, pt2)
    model = model.cpu().float().eval()
    spec = model.input_spec
    # Batch 2, not 1: torch.export specialises a size of 1 to a constant. Any batch size, 1 included, runs later.
    example = (torch.rand(2, spec.channels, *spec.size),)
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch")}}
    spec_json = {
        "input_name": INPUT_NAME,
        "shape": ["batch", spec.channels, *spec.size],
        "channels": spec.channels,
        "height": spec.size[0],
        "width": spec.size[1],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "mean": [float(f"{v:.7g}") for v in spec.mean],  # float32 values, printed without float64 noise
        "std": [float(f"{v:.7g}") for v in spec.std],
        "normalization": "inside the model: (images - mean) / std; feed [0, 1] pixels, do not normalise again",
        "output_name": OUTPUT_NAME,
        "output": "log_probs" if model.hparams.get("loss") == "nll" else "logits",
        "task": model.task,  # multiclass: softmax gives probabilities; multilabel: a sigmoid per label
        **({"thresholds": [round(t, 4) for t in model.thresholds.tolist()]} if model.multilabel else {}),
        "tta_hflip": bool(model.hparams.get("tta_hflip")),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.partial-", dir=output.parent) as partial_dir:
        partial = Path(partial_dir)  # removed on failure; on success renamed to ``output``
        program = torch.export.export(model, example, dynamic_shapes=dynamic)  # the one forward, traced
        if pt2:
            with warnings.catch_warnings():  # about non-contiguous (channels-last) weights; harmless on the CPU
                warnings.filterwarnings("ignore", message="No complete tensor found in the group")
                torch.export.save(program, partial / FILES["pt2"])
        if onnx:
            names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
            exported = torch.onnx.export(program, example, **names, dynamic_shapes=dynamic, dynamo=True, verbose=False)
            exported.save(partial / FILES["onnx"])  # weights over 2 GiB (protobuf's limit) go beside it, .onnx.data
        (partial / FILES["labels"]).write_text(json.dumps(list(model.class_names), indent=1) + "\n")
        (partial / FILES["spec"]).write_text(json.dumps(spec_json, indent=1) + "\n")
        partial.rename(output)  # replaces an empty ``output`` (checked above)
    kinds = {"onnx_data": f"{FILES['onnx']}.data", **FILES}
    return {kind: output / name for kind, name in kinds.items() if (output / name).is_file()}


def export_checkpoint(
    ckpt_path: str | Path, output: str | Path | None = None, onnx: bool = True, pt2: bool = True
) -> dict[str, Path]:
    """Export a checkpoint to ONNX and torch.export, with labels.json and input_spec.json.

    Args:
        ckpt_path: checkpoint, e.g. <run>/checkpoints/last.ckpt
        output: folder (new or empty); default <run>/export, else export/ beside the checkpoint
        onnx: write model.onnx (needs pip install -e '.[export]')
        pt2: write model.pt2 (torch.export)
    """
    model = ImageClassifier.from_checkpoint(ckpt_path, compile=False)
    output = output if output is not None else (run_dir_of(ckpt_path) or Path(ckpt_path).parent) / "export"
    return export_model(model, output, onnx=onnx, pt2=pt2)


def main(argv: list[str] | None = None) -> None:
    """``python -m src.train export``: parse the arguments, export, say where the files went."""
    from jsonargparse import auto_cli

    written = auto_cli(export_checkpoint, args=argv, as_positional=False, prog="python -m src.train export")
    print(f"exported to {written['spec'].parent}: {', '.join(path.name for path in written.values())}")


class OnnxModel(nn.Module):
    """``model.onnx`` in onnxruntime, used by ``Predictor`` like a checkpoint: the same ``Preprocess.pixels``."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        super().__init__()
        path = Path(path) / FILES["onnx"] if Path(path).is_dir() else Path(path)
        if not path.is_file():
            raise UserError(f"no ONNX model at {path}: give model.onnx or its folder, written by `export`.")
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"running an ONNX model needs onnxruntime: {INSTALL}") from None
        spec = json.loads((path.parent / FILES["spec"]).read_text())
        self.class_names: list[str] = json.loads((path.parent / FILES["labels"]).read_text())
        self.input_spec = InputSpec(spec["channels"], (spec["height"], spec["width"]), spec["mean"], spec["std"])
        self.preprocess = Preprocess(self.input_spec)
        self.task = spec.get("task", "multiclass")
        self.multilabel = self.task == "multilabel"
        self.thresholds = torch.tensor(spec.get("thresholds", []))
        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        pixels = self.preprocess.pixels(images).cpu().contiguous()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})
        return torch.from_numpy(logits)
