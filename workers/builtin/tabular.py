"""Tabular classification data for ``builtin:mlp``: scikit-learn's bundled sets or a user's file.

``dataset`` is ``digits``, ``breast_cancer``, ``wine`` (shipped inside scikit-learn, no download)
or a path to a ``.csv`` / ``.parquet`` file whose column ``target`` holds the class labels.

Files: the first CSV row names the columns. A column whose values all parse as numbers is a
numeric feature (empty cells and NA/NaN are filled with the column mean); any other column is
categorical and one-hot encoded (its 50 most frequent values, the rest share one column). The target
may hold strings or integers; it is always treated as class labels (classification only). Parquet
needs pandas with a Parquet engine (pyarrow), which hpo does not install.

A relative path is looked up in the spec file's folder (the trial runner puts it on ``sys.path``),
then in the current directory.

The split into training and validation data is stratified and fixed by ``split_seed`` (not by the
trial's seed), so all trials of a study are scored on the same validation rows. Features are
standardized with the training rows' mean and standard deviation.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

BUNDLED = ("digits", "breast_cancer", "wine")
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_CATEGORIES = 50
_MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}


@dataclass(frozen=True)
class Table:
    """Features as float32 (rows x columns) and integer class labels 0..n_classes-1."""

    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]


def load_table(
    dataset: str | os.PathLike = "digits", target: str | None = None, base_dir: str | os.PathLike | None = None
) -> Table:
    """A bundled dataset by name, or a user's CSV/Parquet file. Raises ValueError, one line."""
    name = str(dataset)
    if name in BUNDLED:
        if target is not None:
            raise ValueError(f"dataset {name!r} is bundled and has a fixed target; remove 'target'")
        return _bundled(name)
    if not name.lower().endswith(FILE_SUFFIXES):
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {', '.join(BUNDLED)} "
            "or a path to a .csv or .parquet file"
        )
    path = resolve_path(name, base_dir)
    if not target:
        raise ValueError(f"dataset {name} needs 'target': the name of the column that holds the class labels")
    stat = path.stat()
    return _file_table(str(path), str(target), stat.st_mtime_ns, stat.st_size)


def resolve_path(name: str, base_dir: str | os.PathLike | None = None) -> Path:
    """An absolute path as is; a relative one in ``base_dir`` if given, else in the spec's folder
    (which the trial runner puts on sys.path), then in the working directory."""
    path = Path(name).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        bases = [str(base_dir)] if base_dir is not None else []
        bases += [p for p in sys.path if p and os.path.isdir(p)] + [os.getcwd()]
        candidates = [Path(base) / path for base in dict.fromkeys(bases)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    where = "" if path.is_absolute() else " (looked in the spec file's folder and in the working directory)"
    raise ValueError(f"dataset file not found: {name}{where}")


@lru_cache(maxsize=4)
def _bundled(name: str) -> Table:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    classes = tuple(str(c) for c in getattr(bunch, "target_names", range(int(bunch.target.max()) + 1)))
    names = tuple(str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])]))
    return Table(bunch.data.astype(np.float32), bunch.target.astype(np.int64), names, classes, name)


@lru_cache(maxsize=4)
def _file_table(path: str, target: str, _mtime: int, _size: int) -> Table:
    """Cached per (path, target, file version)."""
    if path.lower().endswith(".csv"):
        header, columns = _read_csv(path)
    else:
        header, columns = _read_parquet(path)
    if target not in header:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise ValueError(f"target column {target!r} not found in {path}; its columns are: {shown}")
    n_rows = len(columns[0]) if columns else 0
    if n_rows < 4:
        raise ValueError(f"{path}: needs at least 4 data rows, found {n_rows}")
    labels = columns[header.index(target)]
    keep = [i for i, v in enumerate(labels) if str(v).strip().lower() not in _MISSING]
    if len(keep) < 4:
        raise ValueError(f"{path}: target column {target!r} has fewer than 4 non-empty values")
    y, classes = _encode_target(path, target, [labels[i] for i in keep])
    features, names = [], []
    for name, values in zip(header, columns):
        if name == target:
            continue
        block, block_names = _encode_feature(name, [values[i] for i in keep])
        features.append(block)
        names.extend(block_names)
    if not features:
        raise ValueError(f"{path}: no feature columns besides the target {target!r}")
    x = np.concatenate(features, axis=1).astype(np.float32)
    return Table(x, y, tuple(names), classes, path)


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {path} as CSV: {exc}") from None
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or not all(header):
        raise ValueError(f"{path}: the first row must name every column once (it is the header)")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {number} has {len(row)} fields, the header has {len(header)}")
    return header, [list(col) for col in zip(*rows[1:])] if len(rows) > 1 else [[] for _ in header]


def _read_parquet(path: str) -> tuple[list[str], list[list]]:
    try:
        import pandas as pd
    except ImportError:
        raise ValueError(
            f"reading Parquet ({path}) needs pandas and pyarrow, which are not installed; "
            "pip install pandas pyarrow, or give a .csv file"
        ) from None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # missing engine, corrupt file
        message = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot read {path} as Parquet: {type(exc).__name__}: {message}") from None
    header = [str(c) for c in frame.columns]
    columns = []
    for c in frame.columns:
        col = frame[c]
        columns.append(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in col.tolist()])
    return header, columns


def _as_float(value) -> float | None:
    """The number in a cell, NaN for a missing one, None if it is not a number."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _encode_target(path: str, target: str, labels: list) -> tuple[np.ndarray, tuple[str, ...]]:
    numbers = [_as_float(v) for v in labels]
    if all(n is not None for n in numbers):
        if any(not float(n).is_integer() for n in numbers):
            raise ValueError(
                f"{path}: target column {target!r} holds non-integer numbers; "
                "the builtin workloads do classification only (use class labels)"
            )
        keys = [str(int(n)) for n in numbers]
        classes = sorted(set(keys), key=int)
    else:
        keys = [str(v).strip() for v in labels]
        classes = sorted(set(keys))
    if len(classes) < 2:
        raise ValueError(f"{path}: target column {target!r} has only one class ({classes[0]!r})")
    if len(classes) > max(100, len(keys) // 2):
        raise ValueError(
            f"{path}: target column {target!r} has {len(classes)} distinct values in {len(keys)} rows; "
            "the builtin workloads do classification only"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[k] for k in keys], dtype=np.int64), tuple(classes)


def _encode_feature(name: str, values: list) -> tuple[np.ndarray, list[str]]:
    numbers = [_as_float(v) for v in values]
    if all(n is not None for n in numbers):
        col = np.array(numbers, dtype=np.float64)
        missing = np.isnan(col)
        if missing.all():
            return np.zeros((len(col), 0)), []  # an empty column carries no information
        if missing.any():
            col[missing] = col[~missing].mean()
        return col[:, None], [name]
    text = [str(v).strip() for v in values]
    counts = Counter(text)
    levels = [level for level, _ in counts.most_common(MAX_CATEGORIES)]
    index = {level: i for i, level in enumerate(levels)}
    other = len(levels) < len(counts)
    block = np.zeros((len(text), len(levels) + other), dtype=np.float64)
    for row, value in enumerate(text):
        block[row, index.get(value, len(levels))] = 1.0
    names = [f"{name}={level}" for level in levels] + ([f"{name}=<other>"] if other else [])
    return block, names


def split_table(table: Table, val_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """Stratified split (when every class has two rows), standardized with training statistics."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    counts = np.bincount(table.y)
    stratify = table.y if counts[counts > 0].min() >= 2 else None
    n_classes = len(table.classes)
    try:
        x_train, x_val, y_train, y_val = train_test_split(
            table.x, table.y, test_size=val_fraction, stratify=stratify, random_state=split_seed
        )
    except ValueError:  # too few rows per class for a stratified split of this size
        x_train, x_val, y_train, y_val = train_test_split(
            table.x, table.y, test_size=val_fraction, random_state=split_seed
        )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return Split(scale(x_train), y_train, scale(x_val), y_val, n_classes, table.feature_names, table.classes)


@lru_cache(maxsize=8)
def _cached_split(dataset: str, target: str | None, val_fraction: float, split_seed: int, _version) -> Split:
    return split_table(load_table(dataset, target), val_fraction, split_seed)


def load_split(
    dataset: str = "digits", target: str | None = None, val_fraction: float = 0.2, split_seed: int = 0
) -> Split:
    """load_table + split_table, cached per file version."""
    dataset = str(dataset)
    version = None
    if dataset not in BUNDLED and dataset.lower().endswith(FILE_SUFFIXES):
        path = resolve_path(dataset)
        stat = path.stat()
        version = (str(path), stat.st_mtime_ns, stat.st_size)
    return _cached_split(dataset, target, float(val_fraction), int(split_seed), version)
