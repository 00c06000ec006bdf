"""Export a checkpoint for deployment without this template: ONNX (onnxruntime, TensorRT, ...) and torch.export.

    python -m src.train export --ckpt_path logs/cnn/version_0/checkpoints/last.ckpt

writes ``model.onnx``, ``model.pt2``, ``labels.json`` (class names in label order) and ``input_spec.json`` into
``logs/cnn/version_0/export/``. Both models take ``images``: float32 (N, C, H, W) in [0, 1] at the trained size,
any batch size N, and return ``logits`` (N, classes); the normalisation is inside, as the checkpoint's is.
TorchScript is deprecated in PyTorch, so it is not offered.

``OnnxModel`` runs such an export with onnxruntime: ``Predictor.from_onnx(folder)`` classifies files, PIL images
and arrays with it exactly as ``Predictor.from_checkpoint`` does with the checkpoint.
"""

import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.checkpoint_io import read_checkpoint, run_dir_of
from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.models.preprocess import InputSpec, Preprocess

INPUT_NAME, OUTPUT_NAME = "images", "logits"
FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "labels": "labels.json", "spec": "input_spec.json"}
INSTALL = "pip install -e '.[export]'"
#: Above this many bytes of weights an ONNX file keeps them beside it (``model.onnx.data``): protobuf's 2 GiB limit.
ONNX_INLINE_LIMIT = 1 << 30


class ExportWrapper(nn.Module):
    """``ImageClassifier.forward`` for what a deployment feeds: float32 [0, 1] images at the trained channels and
    size. Normalises, runs the network (and the mirrored image with ``tta_hflip``), log-softmax with ``loss: nll``.

    Plain tensor code only (no resizing, no uint8 or list handling), so the graph is small and fully static but for
    the batch size. Export parity with the checkpoint is tested (tests/test_export.py).
    """

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.net = model.net
        self.register_buffer("mean", model.preprocess.mean.detach().float().clone())
        self.register_buffer("std", model.preprocess.std.detach().float().clone())
        hparams = model.hparams
        self.channels_last = bool(hparams.get("channels_last"))
        self.tta_hflip = bool(hparams.get("tta_hflip"))
        self.log_probs = hparams.get("loss") == "nll"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if self.tta_hflip:
            out = (out + self.net(x.flip(-1))) / 2
        return F.log_softmax(out, dim=1) if self.log_probs else out


def default_output(ckpt_path: str | Path) -> Path:
    """``<run>/export`` for ``<run>/checkpoints/x.ckpt`` (the run's other outputs live there), else ``export/``
    beside the checkpoint."""
    return (run_dir_of(ckpt_path) or Path(ckpt_path).parent) / "export"


def _check_output(output: Path) -> None:
    """Nothing is overwritten: an existing export stays as it is."""
    if output.is_file():
        raise UserError(f"--output {output} is a file; pass a folder for the exported files.")
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"--output {output} already exists and is not empty; pass another --output (nothing is lost).")


def _check_onnx_installed() -> None:
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"exporting to ONNX needs {' and '.join(missing)}: {INSTALL} (or --onnx false for model.pt2 alone)."
        )


def load_for_export(ckpt_path: str | Path) -> ImageClassifier:
    """The checkpoint's model in eval mode, float32, on the CPU and never compiled (an export traces the plain
    network). Weights-only unpickling: no code in the file runs."""
    model = ImageClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True, compile=False)
    return model.float().eval()


def export_model(model: ImageClassifier, output: str | Path, onnx: bool = True, pt2: bool = True) -> dict[str, Path]:
    """Write the exports of ``model`` (moved to the CPU, float32, eval mode) into the folder ``output`` (created;
    must not hold files yet) and return their paths by kind (``onnx``, ``pt2``, ``labels``, ``spec``; also
    ``onnx_data`` for weights over ``ONNX_INLINE_LIMIT``, which ONNX keeps in ``model.onnx.data``).

    Written to a temporary sibling folder first, renamed at the end: a failed export leaves nothing behind that
    a rerun would refuse to overwrite.
    """
    output = Path(output)
    _check_output(output)
    if onnx:
        _check_onnx_installed()
    model = model.cpu().float().eval()
    spec = model.input_spec
    wrapper = ExportWrapper(model).eval()
    # Batch 2, not 1: torch.export specialises a size of 1 to a constant. Any batch size, 1 included, runs later.
    example = (torch.rand(2, spec.channels, *spec.size),)
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch")}}
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed export of a process with the same id
    partial.mkdir()
    written: dict[str, Path] = {}
    try:
        program = torch.export.export(wrapper, example, dynamic_shapes=dynamic)
        if pt2:
            with warnings.catch_warnings():  # about non-contiguous (channels-last) weights; harmless on the CPU
                warnings.filterwarnings("ignore", message="No complete tensor found in the group")
                torch.export.save(program, partial / FILES["pt2"])
            written["pt2"] = output / FILES["pt2"]
        opset = None
        if onnx:
            weight_bytes = sum(t.numel() * t.element_size() for t in program.state_dict.values())
            onnx_program = torch.onnx.export(
                program,
                example,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,  # names the ONNX batch dimension "batch"
                dynamo=True,
                verbose=False,
            )
            onnx_program.save(partial / FILES["onnx"], external_data=weight_bytes > ONNX_INLINE_LIMIT)
            opset = onnx_program.model.opset_imports.get("")
            written["onnx"] = output / FILES["onnx"]
            if (partial / f"{FILES['onnx']}.data").is_file():  # the weights of a large model, read from beside it
                written["onnx_data"] = output / f"{FILES['onnx']}.data"
        (partial / FILES["labels"]).write_text(json.dumps(list(model.class_names), indent=1) + "\n")
        (partial / FILES["spec"]).write_text(json.dumps(_spec_json(model, spec, opset), indent=1) + "\n")
        written.update(labels=output / FILES["labels"], spec=output / FILES["spec"])
        if output.is_dir():
            output.rmdir()  # empty (checked above)
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return written


def _spec_json(model: ImageClassifier, spec: InputSpec, opset: int | None) -> dict[str, Any]:
    """What a deployment must feed the exported models and what it gets back, in words a person can follow."""
    log_probs = model.hparams.get("loss") == "nll"
    return {
        "input_name": INPUT_NAME,
        "shape": ["batch", spec.channels, *spec.size],
        "channels": spec.channels,
        "height": spec.size[0],
        "width": spec.size[1],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "layout": "NCHW",
        "mean": [float(f"{v:.7g}") for v in spec.mean],  # float32 values, printed without float64 noise
        "std": [float(f"{v:.7g}") for v in spec.std],
        "normalization": "inside the model: (images - mean) / std; feed [0, 1] pixels, do not normalise again",
        "output_name": OUTPUT_NAME,
        "output": "log_probs" if log_probs else "logits",
        "output_note": "softmax(output, axis=1) gives class probabilities"
        + (" (log-probabilities: the model was trained with loss nll)" if log_probs else ""),
        "num_classes": len(model.class_names),
        "tta_hflip": bool(model.hparams.get("tta_hflip")),
        "onnx_opset": opset,
        "torch_version": torch.__version__.split("+")[0],
    }


def export_checkpoint(
    ckpt_path: str | Path, output: str | Path | None = None, onnx: bool = True, pt2: bool = True
) -> dict[str, Path]:
    """Export a checkpoint of this template (see the module docstring) into ``output``, by default the run's
    ``export/`` folder. Bad input (missing checkpoint, existing export, export extra absent) raises ``UserError``
    before anything is loaded or written."""
    ckpt_path = Path(ckpt_path)
    output = Path(output) if output is not None else default_output(ckpt_path)
    if not (onnx or pt2):
        raise UserError("nothing to export: --onnx and --pt2 are both false.")
    read_checkpoint(ckpt_path)  # a missing file, a folder, not a checkpoint: one line naming the fix
    _check_output(output)
    if onnx:
        _check_onnx_installed()
    return export_model(load_for_export(ckpt_path), output, onnx=onnx, pt2=pt2)


def main(argv: list[str] | None = None) -> None:
    """``python -m src.train export``: parse the arguments, export, say where the files went."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="python -m src.train export",
        description="Export a checkpoint to ONNX (model.onnx) and torch.export (model.pt2), with labels.json and "
        "input_spec.json. Inputs: float32 images (N, C, H, W) in [0, 1] at the trained size; outputs: logits.",
        default_config_files=[],
    )
    parser.add_argument(
        "--ckpt_path", type=str, required=True, help="checkpoint file, e.g. <run>/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="folder for the exported files (must not hold files yet); default: <run>/export",
    )
    parser.add_argument("--onnx", type=bool, default=True, help=f"write model.onnx (needs {INSTALL})")
    parser.add_argument("--pt2", type=bool, default=True, help="write model.pt2 (torch.export)")
    args = parser.parse_args(argv)
    written = export_checkpoint(args.ckpt_path, args.output, onnx=args.onnx, pt2=args.pt2)
    print(f"exported to {written['spec'].parent}: {', '.join(path.name for path in written.values())}")


class OnnxModel(nn.Module):
    """An exported ``model.onnx`` run by onnxruntime, with what ``Predictor`` needs of a model: ``class_names``,
    ``input_spec``, ``forward`` (images as the checkpoint's model takes them -> logits) and ``_probs``.

    Reads ``labels.json`` and ``input_spec.json`` beside the model; images are converted to the trained channels
    and size by the checkpoint's own code (``Preprocess.pixels``), so both give the same probabilities.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        super().__init__()
        path = Path(path)
        path = path / FILES["onnx"] if path.is_dir() else path
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
        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        pixels = self.preprocess.pixels(images).cpu().contiguous()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})
        return torch.from_numpy(logits)

    @staticmethod
    def _probs(out: torch.Tensor) -> torch.Tensor:
        """Class probabilities (as ``ImageClassifier._probs``; also right for the log-probabilities of ``nll``)."""
        return F.softmax(out.detach().float(), dim=1)
