"""Labels from a table: a CSV or TSV of image paths and labels (the Kaggle and annotation-tool format). One class
name per row, several in one cell (``cat|dog``), or one 0/1 column per label; an optional split column."""

import csv
import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from src.data.files import LabelledFilesDataModule
from src.errors import UserError

SPLITS = ("train", "val", "test")


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, row)`` pairs: tab-separated for ``.tsv``/``.tab``, else comma-separated."""
    if not path.is_file():
        raise UserError(f"--data.csv {path}: no such file. Give a CSV (or .tsv) with a path and a label column.")
    with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: Excel's byte-order mark is no column name
        reader = csv.DictReader(file, delimiter="\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise UserError(f"--data.csv {path} has no rows: write a header (e.g. path,label) and one row per image.")
    return reader.fieldnames, rows


class TableDataModule(LabelledFilesDataModule):
    """Rows are sorted by path first, so their order in the file never changes a run; for ``<class>/<file>`` paths
    that is the image folder's order, hence its splits. Labels are linked into the model: read here, in ``__init__``."""

    def __init__(
        self,
        csv: str = "data/labels.csv",
        image_root: str | None = None,
        path_column: str = "path",
        label_column: str | None = "label",
        label_columns: list[str] | None = None,
        label_separator: str | None = "|",
        split_column: str | None = "split",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            csv: the table; ``.tsv`` or ``.tab`` files are tab-separated, others comma-separated. Extra columns
                are ignored.
            image_root: the folder the paths are relative to; ``None``: the table's folder.
            path_column: the column of image paths.
            label_column: the column of class names; ``cat|dog`` (see ``label_separator``) makes it multi-label.
            label_columns: instead of ``label_column``: one 0/1 column per label (multi-label), e.g. [cat, dog].
            label_separator: splits a label cell into several labels; ``null``: class names are taken whole.
            split_column: an optional column of ``train``/``val``/``test``; without it the splits are cut
                stratified (``test_split``, ``val_split``).
        """
        self.csv, root = Path(csv), Path(csv).parent if image_root is None else Path(image_root)
        header, rows = read_table(self.csv)
        if not label_column and not label_columns:
            raise UserError("--data.label_column and --data.label_columns are both empty: name the label column(s)")
        if label_columns and label_column in header:
            raise UserError(
                f"--data.csv {csv} has a {label_column!r} column and --data.label_columns {label_columns}: which are "
                "the labels? Pass --data.label_column null to use the 0/1 columns, or leave out --data.label_columns."
            )
        wanted = [path_column, *(label_columns or [label_column])]
        missing = [column for column in wanted if column not in header]
        if missing:
            option = "path_column" if missing[0] == path_column else "label_column" + "s" * bool(label_columns)
            raise UserError(
                f"--data.csv {csv} has no column {missing[0]!r} (found {', '.join(header)}): rename it in the table "
                f"or pass --data.{option}."
            )
        table, where = [], f"--data.csv {csv}"  # (path, label names, split, line)
        for line, row in rows:
            cells = {column: (row.get(column) or "").strip() for column in wanted}  # None: a short row
            empty = [column for column in wanted if not cells[column]]
            if label_columns:
                bad = [c for c in label_columns if cells[c] not in ("0", "1")]
                if bad and not empty:
                    raise UserError(f"{where} line {line}: {bad[0]!r} is {cells[bad[0]]!r}, not 0 or 1 (one 0/1 column "
                                    "per label): write 1 where the image shows the label, else 0.")  # fmt: skip
                names = [c for c in label_columns if cells[c] == "1"]
            else:
                parts = cells[label_column].split(label_separator) if label_separator else [cells[label_column]]
                names = sorted({name.strip() for name in parts} - {""})
                empty = empty or ([] if names else [label_column])  # a cell of separators only
            if empty:
                raise UserError(f"{where} line {line}: the {empty[0]!r} cell is empty: fill it in, or remove the row.")
            split = (row.get(split_column) or "").strip().lower() if split_column in header else "all"
            if split not in (*SPLITS, "all"):
                raise UserError(
                    f"{where} line {line}: {split_column} {split!r} is not train, val or test: use one of them, or "
                    f"drop the {split_column!r} column to cut the splits by --data.val_split and --data.test_split."
                )
            table.append((Path(os.path.normpath(root / cells[path_column])), names, split, line))
        self._check_paths([path for path, *_ in table], where, path_column, root)
        splits = {split for _, _, split, _ in table}
        if not splits & {"train", "all"}:
            raise UserError(f"{where}: no row has {split_column} train: mark the training images train.")
        train = {name for _, names, split, _ in table if split in ("train", "all") for name in names}
        for _, names, split, line in table:
            if not set(names) <= train:
                raise UserError(
                    f"{where} line {line}: label {sorted(set(names) - train)[0]!r} of this {split} image is never a "
                    "label of a train image: add train images of it, or remove its rows."
                )
        self.class_names = sorted(label_columns or train)
        several = sum(len(names) > 1 for _, names, _, _ in table)
        self.multilabel = bool(label_columns) or several > 0
        if self.multilabel:
            rank_zero_info(
                f"multi-label: {several} of {len(table)} rows have several labels "
                f"({'--data.label_columns' if label_columns else repr(label_separator) + ' in a label cell'}), "
                f"so every image gets a yes/no per label ({len(self.class_names)} labels)"
            )
        # The image folder's order, not the file's: a folder's files before its sub-folders', each sorted by name.
        self._table = sorted(table, key=lambda entry: (entry[0].parent.parts, entry[0].name))
        super().__init__(**kwargs)

    @staticmethod
    def _check_paths(paths: list[Path], where: str, column: str, root: Path) -> None:
        twice = sorted(str(path) for path, n in Counter(paths).items() if n > 1)
        if twice:
            raise UserError(f"{where}: {len(twice)} path(s) listed more than once, e.g. {', '.join(twice[:3])}: "
                            "keep one row per image.")  # fmt: skip
        absent = [str(path) for path in paths if not path.is_file()]
        if absent:
            raise UserError(
                f"{where}: {len(absent)} of {len(paths)} paths do not exist, e.g. {', '.join(absent[:3])}: fix the "
                f"{column!r} column, or pass --data.image_root (the folder paths are relative to; now {root})."
            )

    @cached_property
    def listed(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """Each split's paths and labels: class indices, or multi-hot float rows for multi-label tables."""
        index, listed = {name: i for i, name in enumerate(self.class_names)}, {}
        for split in ("all", *SPLITS):
            rows = [(path, names) for path, names, row_split, _ in self._table if row_split == split]
            if not rows:
                continue
            if self.multilabel:
                labels = torch.zeros(len(rows), len(index))
                for i, (_, names) in enumerate(rows):
                    labels[i, [index[name] for name in names]] = 1.0
            else:
                labels = torch.tensor([index[names[0]] for _, names in rows])
            listed[split] = ([path for path, _ in rows], labels)
        return listed

    def no_test_split(self, stage: str) -> str:
        return (
            f"--data.csv {self.csv} has no test rows, so there are no test images to {stage} on: mark some rows "
            "test in its split column, or drop that column to cut train/val/test from the table (--data.test_split)."
        )
