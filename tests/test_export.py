"""Export to ONNX and torch.export: the exported graphs give the checkpoint's logits (max |diff| < 1e-4, same top-1)
at any batch size, the files say how to feed them, and bad input fails in one line without touching anything."""

import importlib.util
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.digits import DigitsDataModule
from src.errors import UserError
from src.export import export_checkpoint, export_model
from src.models.classifier import ImageClassifier
from src.models.transfer import TransferNet
from src.predict import Predictor
from src.train import cli_main
from tests.conftest import CONFIGS, FAST

TOLERANCE = 1e-4
EXPORT_EXTRA = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_export_extra = pytest.mark.skipif(not EXPORT_EXTRA, reason="export extra absent: pip install -e '.[export]'")
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]


def train(root: Path, config: str, *overrides: str) -> Path:
    """``last.ckpt`` of a few training batches on the bundled digits, run in ``root``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli = cli_main(["fit", "--config", str(CONFIGS / config), *FAST, *TINY, *overrides])
    return Path(cli.trainer.log_dir).resolve() / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SimpleCNN, cross-entropy: plain logits."""
    return train(tmp_path_factory.mktemp("cnn"), "cnn.yaml")


def digits(n: int = 32) -> torch.Tensor:
    """``n`` real test images of the bundled digits, uint8 (n, 1, 8, 8)."""
    return DigitsDataModule().load_splits()["test"][0][:n]


def check_parity(model: ImageClassifier, folder: Path) -> dict[str, float]:
    """onnxruntime and torch.export (when exported) against the checkpoint's model (eval mode) on 32 digits,
    batch 1 and batch 7 (random [0, 1] images): max |diff| per runtime, asserted below ``TOLERANCE``; same top-1."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(folder / "model.pt2").module() if (folder / "model.pt2").is_file() else None
    spec = model.input_spec
    real = model.preprocess.pixels(digits())  # what a deployment feeds: [0, 1] floats at the trained size
    batches = {32: real, 1: real[:1], 7: torch.rand(7, spec.channels, *spec.size, generator=torch.Generator())}
    worst = {"onnxruntime": 0.0, "torch.export": 0.0} if program else {"onnxruntime": 0.0}
    for n, images in batches.items():
        with torch.no_grad():
            expected = model(images)
            outputs = {"onnxruntime": torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])}
            if program is not None:
                outputs["torch.export"] = program(images)
        for runtime, out in outputs.items():
            assert out.shape == (n, len(model.class_names)), runtime
            diff = (out - expected).abs().max().item()
            assert diff < TOLERANCE, f"{runtime}, batch {n}: max |diff| {diff:.2e}"
            assert torch.equal(out.argmax(1), expected.argmax(1)), f"{runtime}, batch {n}: top-1 differs"
            worst[runtime] = max(worst[runtime], diff)
    print(f"\n{type(model.net).__name__} export parity, max |diff| over batches 32, 1, 7: {worst}")
    return worst


@pytest.fixture(scope="module")
def cnn_export(cnn_checkpoint: Path) -> dict[str, Path]:
    """The CNN's export into its default folder (the one export to ONNX of a CNN: each takes seconds)."""
    return export_checkpoint(cnn_checkpoint)


@needs_export_extra
def test_cnn_export_matches_the_checkpoint_and_describes_its_input(
    cnn_checkpoint: Path, cnn_export: dict[str, Path]
) -> None:
    folder = cnn_checkpoint.parent.parent / "export"  # default: the run's own export/ folder
    assert cnn_export == {name: folder / file for name, file in
                          [("pt2", "model.pt2"), ("onnx", "model.onnx"), ("labels", "labels.json"),
                           ("spec", "input_spec.json")]}  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["input_spec.json", "labels.json", "model.onnx", "model.pt2"]
    assert not list(folder.parent.glob(".export.partial-*"))
    model = ImageClassifier.from_checkpoint(cnn_checkpoint)
    assert json.loads((folder / "labels.json").read_text()) == model.class_names
    spec = json.loads((folder / "input_spec.json").read_text())
    assert spec["input_name"] == "images" and spec["output_name"] == "logits" and spec["output"] == "logits"
    assert (spec["channels"], spec["height"], spec["width"], spec["dtype"]) == (1, 8, 8, "float32")
    assert spec["shape"] == ["batch", 1, 8, 8] and spec["range"] == [0.0, 1.0]
    assert spec["mean"] == pytest.approx([0.3053]) and spec["std"] == pytest.approx([0.3759])
    check_parity(model, folder)

    import onnx

    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch, named


@needs_export_extra
def test_resnet_with_batchnorm_channels_last_nll_and_tta_exports_log_probs(tmp_path: Path) -> None:
    ckpt = train(tmp_path, "fast.yaml", "--model.loss=nll", "--model.tta_hflip=true")  # fast.yaml: channels_last
    model = ImageClassifier.from_checkpoint(ckpt)
    assert model.hparams.channels_last and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.modules())
    written = export_checkpoint(ckpt, tmp_path / "deploy")
    spec = json.loads(written["spec"].read_text())
    assert spec["output"] == "log_probs" and spec["tta_hflip"] is True and spec["output_name"] == "logits"
    check_parity(model, tmp_path / "deploy")


@needs_export_extra
def test_transfer_net_export_and_predictor_on_onnx_agree_with_the_checkpoint(tmp_path: Path) -> None:
    """A torchvision backbone (no download: random weights) at its own input: 3 channels, 32 px, ImageNet
    statistics, fed the grey 8 px digits through the same preprocessing by ``Predictor.from_onnx``."""
    torch.manual_seed(0)
    dm = DigitsDataModule()
    network = partial(TransferNet, backbone="resnet18", weights=None, input_size=32)
    model = ImageClassifier(dm.class_names, dm.input_shape, dm.mean, dm.std, network=network).eval()
    export_model(model, tmp_path / "export", pt2=False)  # ONNX only: this is the slowest export here (~7 s)
    assert not (tmp_path / "export" / "model.pt2").exists()
    spec = json.loads((tmp_path / "export" / "input_spec.json").read_text())
    assert spec["shape"] == ["batch", 3, 32, 32] and spec["mean"] == pytest.approx([0.485, 0.456, 0.406])
    check_parity(model, tmp_path / "export")

    images = digits(12).numpy()  # uint8 (12, 1, 8, 8): converted to 3 x 32 x 32 by both
    expected = Predictor(model, device="cpu").predict(images, top_k=3)
    got = Predictor.from_onnx(tmp_path / "export").predict(images, top_k=3)
    assert [p.classes for p in got] == [p.classes for p in expected]
    assert np.allclose([p.probs for p in got], [p.probs for p in expected], atol=1e-5)
    assert [p.source for p in got] == [p.source for p in expected]


@needs_export_extra
def test_predictor_from_onnx_matches_the_checkpoint_on_any_image_kind(
    cnn_checkpoint: Path, cnn_export: dict[str, Path]
) -> None:
    """Grey 8 px digits as a batch, and RGB 24 px (H, W, C) arrays: converted to 1 x 8 x 8 by the same code."""
    grey = digits(20)
    rgb = [np.repeat(np.kron(image[0].numpy(), np.ones((3, 3), np.uint8))[..., None], 3, -1) for image in grey[:5]]
    for images in (grey, rgb):
        expected = Predictor.from_checkpoint(cnn_checkpoint, device="cpu").predict(images, top_k=3)
        onnx_predictor = Predictor.from_onnx(cnn_export["onnx"])  # model.onnx, or its folder
        got = onnx_predictor.predict(images, top_k=3)
        assert [p.classes for p in got] == [p.classes for p in expected]
        assert np.allclose([p.probs for p in got], [p.probs for p in expected], atol=1e-5)
    assert Predictor.from_onnx(cnn_export["onnx"].parent).class_names == [str(d) for d in range(10)]


def test_without_the_export_extra_onnx_asks_for_it_and_pt2_still_exports(
    cnn_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("onnx", "onnxscript") else
                        real_find_spec(name, *a))  # fmt: skip
    with pytest.raises(UserError, match=r"needs onnx and onnxscript: pip install -e '\.\[export\]'") as err:
        export_checkpoint(cnn_checkpoint, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    written = export_checkpoint(cnn_checkpoint, tmp_path / "out", onnx=False)
    assert sorted(written) == ["labels", "pt2", "spec"] and all(p.is_file() for p in written.values())
    images = torch.rand(1, 1, 8, 8)
    expected = ImageClassifier.from_checkpoint(cnn_checkpoint)(images)
    assert (torch.export.load(written["pt2"]).module()(images) - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", r"checkpoint not found: --ckpt_path .*missing\.ckpt\. Give the path of a \.ckpt file"),
        ("directory", r"is a directory; give a checkpoint file in it"),
        ("text", r"notes\.ckpt is not a checkpoint this template can read safely \(UnpicklingError\)"),
        ("state-dict", r"w\.pt is not a checkpoint this template can read safely \(no model hyper-parameters\)"),
    ],
    ids=["missing", "directory", "text", "state-dict"],
)
def test_bad_checkpoint_is_one_line(tmp_path: Path, kind: str, message: str) -> None:
    path = {"missing": tmp_path / "missing.ckpt", "directory": tmp_path, "text": tmp_path / "notes.ckpt",
            "state-dict": tmp_path / "w.pt"}[kind]  # fmt: skip
    if kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "state-dict":
        torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=message) as err:
        export_checkpoint(path, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_an_existing_export_is_never_overwritten(cnn_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").write_text("an earlier export")
    with pytest.raises(UserError, match=r"--output .*out already exists and is not empty; pass another --output"):
        export_checkpoint(cnn_checkpoint, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.onnx"]
    assert (tmp_path / "out" / "model.onnx").read_text() == "an earlier export"
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file; pass a folder"):
        export_checkpoint(cnn_checkpoint, tmp_path / "file")
    with pytest.raises(UserError, match="nothing to export"):
        export_checkpoint(cnn_checkpoint, tmp_path / "new", onnx=False, pt2=False)


def test_cli_export_subcommand(cnn_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``python -m src.train export`` (wired in ``src.train.cli_main``): files written, where printed; a user
    mistake exits 2 with one ``error:`` line. (``--onnx false``: the ONNX export itself is tested above.)"""
    cli_main(["export", "--ckpt_path", str(cnn_checkpoint), "--output", str(tmp_path / "cli"), "--onnx", "false"])
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["input_spec.json", "labels.json", "model.pt2"]
    assert str(tmp_path / "cli") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and len(err.strip().splitlines()) == 1
