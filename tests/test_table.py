"""Labels from a table: a CSV or TSV of paths and labels trains like an image folder, whatever the order of its rows;
split columns, streaming and both multi-label formats; one clear line for each mistake in the table."""

import csv
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.image_folder import ImageFolderDataModule
from src.data.table import TableDataModule
from src.errors import UserError
from tests.conftest import CONFIGS
from tests.test_bad_input import run_expecting_error

#: Class names whose string order differs from the order of their folders ("a-b/x" < "a/x", yet folder a < a-b).
NAMES = ["a", "a-b", "a.c", "b", "c", "d", "e", "f", "g", "h"]
SMALL = dict(image_size=8, grayscale=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """scikit-learn's digits as ``root/<class>/<i>.png`` (some of class ``a`` in ``a/0sub/``: torchvision lists a
    folder's files before its sub-folders'), and their (path relative to root, class) rows."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root, data = tmp_path_factory.mktemp("digits"), load_digits()
    rows = []
    for i, (pixels, label) in enumerate(zip(data.images, data.target, strict=True)):
        path = f"{NAMES[label]}/{'0sub/' if label == 0 and i % 3 == 0 else ''}{i}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(root / path)
        rows.append((path, NAMES[label]))
    return root, rows


def write_table(path: Path, header: list[str], rows: list, shuffle: int | None = None) -> Path:
    """A CSV (``.tsv``: tab-separated) of ``rows``, shuffled with seed ``shuffle`` when given."""
    rows = list(rows)
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    with path.open("w", newline="") as file:
        writer = csv.writer(file, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerows([header, *rows])
    return path


def splits(dm: TableDataModule | ImageFolderDataModule) -> dict[str, tuple[list[str], torch.Tensor]]:
    """Each split's image paths and labels, as the data module trains on them."""
    dm.setup("fit")
    return {s: (dm.sample_ids(s), dm.split_labels(s)) for s in ("train", "val", "test") if s in dm._datasets}


def test_fit_from_a_csv_learns_the_digits(run_cli, digits, tmp_path: Path) -> None:
    root, rows = digits
    table = write_table(tmp_path / "labels.csv", ["path", "label"], rows, shuffle=0)
    cli = run_cli(
        "fit", "cnn.yaml", "--data", str(CONFIGS / "data" / "csv.yaml"), f"--data.csv={table}",
        f"--data.image_root={root}", "--data.image_size=8", "--data.grayscale=true", "--trainer.max_epochs=1",
    )  # fmt: skip
    assert cli.datamodule.class_names == NAMES and not cli.datamodule.multilabel
    assert cli.trainer.callback_metrics["val/acc"].item() > 0.7  # chance: 0.1; one epoch reaches ~0.9


def test_a_shuffled_csv_or_tsv_splits_like_the_image_folder(digits, tmp_path: Path) -> None:
    """The same files give the same splits and order, whichever the format, row order or extra columns."""
    root, rows = digits
    folder = splits(ImageFolderDataModule(str(root), **SMALL))
    noisy = [(label, path, "unrelated") for path, label in rows]
    for name, seed in (("labels.csv", 1), ("labels.tsv", 2)):
        table = write_table(root / name, ["label", "path", "note"], noisy, shuffle=seed)
        from_table = splits(TableDataModule(str(table), **SMALL))
        assert from_table.keys() == folder.keys() == {"train", "val", "test"}
        for split, (paths, labels) in folder.items():
            assert from_table[split][0] == paths and torch.equal(from_table[split][1], labels), split


def test_a_split_column_is_honoured(digits, tmp_path: Path) -> None:
    root, rows = digits
    marked = [(path, label, ("val", "test", "train", "train")[i % 4]) for i, (path, label) in enumerate(rows)]
    dm = TableDataModule(str(write_table(tmp_path / "t.csv", ["path", "label", "split"], marked, 3)), str(root))
    got = splits(dm)
    for split in ("train", "val", "test"):
        assert sorted(got[split][0]) == sorted(str(root / p) for p, _, s in marked if s == split), split
    only_train = [(p, label, "train") for p, label in rows[:300]]
    dm = TableDataModule(str(write_table(tmp_path / "u.csv", ["path", "label", "split"], only_train)), str(root))
    assert splits(dm).keys() == {"train", "val"}  # val cut from train; no test split is invented
    with pytest.raises(UserError, match=r"has no test rows.*mark some rows test"):
        dm.setup("test")


def test_streaming_gives_the_same_batches(digits, tmp_path: Path) -> None:
    root, rows = digits
    table = str(write_table(tmp_path / "t.csv", ["path", "label"], rows[:400]))
    memory, stream = (TableDataModule(table, str(root), in_memory=m, batch_size=32, **SMALL) for m in (True, False))
    memory.setup("fit")
    stream.setup("fit")
    assert memory.train_dataloader().num_workers == 0 and stream.train_dataloader().num_workers >= 1
    assert (memory.mean, memory.std) == (stream.mean, stream.std)
    for loader in ("val_dataloader", "test_dataloader"):
        for a, b in zip(getattr(memory, loader)(), getattr(stream, loader)(), strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    first = []
    for dm in (memory, stream):
        torch.manual_seed(0)  # the shuffle's seed, as seed_everything sets it
        first.append(next(iter(dm.train_dataloader())))
    assert torch.equal(first[0][0], first[1][0]) and torch.equal(first[0][1], first[1][1])


MULTI = [("x/0.png", "cat"), ("x/1.png", "cat|dog"), ("x/2.png", "dog"), ("x/3.png", " bird | cat "),
         ("x/4.png", "bird"), ("x/5.png", "dog|bird"), ("x/6.png", "cat"), ("x/7.png", "dog")]  # fmt: skip


def test_both_multilabel_formats_give_the_same_multi_hot_labels(tmp_path: Path, caplog) -> None:
    from tests.test_bad_input import save_images

    save_images(tmp_path / "x", len(MULTI))
    caplog.set_level(logging.INFO)
    piped = TableDataModule(str(write_table(tmp_path / "piped.csv", ["path", "label"], MULTI, shuffle=0)))
    assert [r.getMessage() for r in caplog.records if "multi-label" in r.getMessage()] == [
        "multi-label: 3 of 8 rows have several labels ('|' in a label cell), so every image gets a yes/no per "
        "label (3 labels)"
    ]  # said once
    flags = [(p, *(int(n in cell) for n in ("dog", "cat", "bird"))) for p, cell in MULTI]
    columns = TableDataModule(
        str(write_table(tmp_path / "flags.csv", ["path", "dog", "cat", "bird"], flags)),
        label_column=None, label_columns=["dog", "cat", "bird"],
    )  # fmt: skip
    assert piped.multilabel and columns.multilabel
    assert piped.class_names == columns.class_names == ["bird", "cat", "dog"]
    (paths, labels), (paths2, labels2) = piped.listed["all"], columns.listed["all"]
    assert paths == paths2 and labels.dtype == torch.float32 and torch.equal(labels, labels2)
    assert labels.tolist()[:4] == [[0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]]
    piped.setup("fit")  # no split column: cut at random (a stratified split needs one label per image)
    cut = [piped.split_labels(split) for split in ("train", "val", "test")]
    assert [len(labels) for labels in cut] == [6, 1, 1] and all(labels.shape[1] == 3 for labels in cut)
    assert piped.task == "multilabel" and piped.val_set.tensors[1].dtype == torch.float32
    single = TableDataModule(str(write_table(tmp_path / "one.csv", ["path", "label"], [(p, "cat") for p, _ in MULTI])))
    assert not single.multilabel and single.listed["all"][1].dtype == torch.long


def images(cwd: Path) -> None:
    from tests.test_bad_input import save_images

    save_images(cwd / "img", 6)


#: A mistake in the table: (its text, extra options, what the one error line must name, the fix it must give).
MISTAKES = {
    "missing_path_column": ("file,label\nimg/0.png,cat\n", [], ("no column 'path'", "found file, label"),
                            ("--data.path_column",)),
    "missing_label_column": ("path,class\nimg/0.png,cat\n", [], ("no column 'label'", "found path, class"),
                             ("--data.label_column",)),
    "paths_that_do_not_exist": ("path,label\nimg/0.png,a\nimg/9.png,b\nnope.png,a\n", [],
                                ("2 of 3 paths do not exist", "img/9.png", "nope.png"), ("--data.image_root",)),
    "empty_label_cell": ("path,label\nimg/0.png,a\nimg/1.png,\n", [], ("line 3", "'label' cell is empty"),
                         ("fill it in",)),
    "separators_only": ("path,label\nimg/0.png,a\nimg/1.png,|\n", [], ("line 3", "'label' cell is empty"), ()),
    "unknown_split_value": ("path,label,split\nimg/0.png,a,train\nimg/1.png,a,valid\n", [],
                            ("line 3", "split 'valid' is not train, val or test"), ("drop the 'split' column",)),
    "label_only_in_val": ("path,label,split\nimg/0.png,a,train\nimg/1.png,b,val\n", [],
                          ("line 3", "label 'b' of this val image is never a label of a train image"),
                          ("add train images of it",)),
    "no_train_rows": ("path,label,split\nimg/0.png,a,val\nimg/1.png,a,test\n", [], ("no row has split train",),
                      ("mark the training images train",)),
    "duplicate_paths": ("path,label\nimg/0.png,a\nimg/1.png,b\n./img/0.png,a\n", [],
                        ("1 path(s) listed more than once", "img/0.png"), ("one row per image",)),
    "label_columns_not_0_or_1": ("path,cat,dog\nimg/0.png,1,0\nimg/1.png,yes,0\n", ["--data.label_columns=[cat,dog]"],
                                 ("line 3", "'cat' is 'yes', not 0 or 1"), ("write 1 where",)),
    "label_columns_beside_a_label_column": ("path,label,cat\nimg/0.png,cat,1\n", ["--data.label_columns=[cat]"],
                                            ("a 'label' column and --data.label_columns ['cat']",),
                                            ("--data.label_column null",)),
    "label_columns_not_in_the_header": ("path,cat\nimg/0.png,1\n",
                                        ["--data.label_columns=[cat,cow]", "--data.label_column=null"],
                                        ("no column 'cow'", "found path, cat"), ("--data.label_columns",)),
    "header_only": ("path,label\n", [], ("has no rows",), ("one row per image",)),
    "empty_file": ("", [], ("has no rows",), ("write a header",)),
}  # fmt: skip


@pytest.mark.parametrize(("text", "options", "value", "fix"), MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_in_the_table_is_one_line_and_nothing_is_written(
    text: str, options: list[str], value: tuple[str, ...], fix: tuple[str, ...], run_cli, capsys, tmp_path: Path
) -> None:
    images(tmp_path)
    (tmp_path / "labels.csv").write_text(text)
    err = run_expecting_error(
        run_cli, capsys, "fit", "cnn.yaml", "--data", str(CONFIGS / "data" / "csv.yaml"),
        f"--data.csv={tmp_path / 'labels.csv'}", *options,
    )  # fmt: skip
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    for part in value + fix:
        assert part in err, f"{part!r} not in: {err}"
    assert not (tmp_path / "logs").exists()


def test_a_missing_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--data.csv .*nowhere.csv: no such file"):
        TableDataModule(str(tmp_path / "nowhere.csv"))
