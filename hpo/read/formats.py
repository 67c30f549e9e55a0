"""Machine-readable output of the read verbs: JSON as is, CSV flattened the way Optuna's
``trials_dataframe()`` names columns (``params_lr``, ``values_0``, ``user_attrs_x``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

FORMATS = ("table", "json", "csv")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists become one level of ``outer_inner`` / ``outer_0`` columns."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}_") if value else {name: None})
        elif isinstance(value, (list, tuple)):
            items = {str(i): v for i, v in enumerate(value)}
            flat.update(flatten(items, f"{name}_") if items else {name: None})
        else:
            flat[name] = value
    return flat


def to_csv(rows: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    """CSV of flattened rows; the columns are every row's, in first-seen order."""
    flat = [flatten(row) for row in rows]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns) or ["empty"], lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def to_json(data: Any, *, lines: bool = False) -> str:
    """Indented JSON, or (``lines``) one compact object per line, for a stream of redraws."""
    return json.dumps(data, default=str) if lines else json.dumps(data, indent=2, default=str)
