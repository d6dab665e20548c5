"""Run logs: CSV and JSON lines files, and TensorBoard scalars when available.

Each kind of record (``"train"``: one per iteration, ``"eval"``: one per evaluation)
goes to ``<kind>_log.csv`` and ``<kind>_log.jsonl`` in the output folder. On resume the
files are rewritten from the checkpoint's history before appending, so rows that a
killed run wrote after its last checkpoint are neither duplicated nor kept.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import _fsync_dir

__all__ = ["RunLog", "tensorboard_writer"]


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null rather than produce an invalid file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Appends records (flat dicts of numbers) to ``<kind>_log.csv`` and ``.jsonl``."""

    def __init__(self, folder: str | os.PathLike, kinds: Sequence[str] = ("train", "eval")):
        self.folder = Path(folder)
        self.kinds = tuple(kinds)
        self._fields: dict[str, list[str]] = {}

    def paths(self, kind: str) -> tuple[Path, Path]:
        return self.folder / f"{kind}_log.csv", self.folder / f"{kind}_log.jsonl"

    def reset(self, records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Rewrite every kind's files with exactly ``records[kind]`` (atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind in self.kinds:
            rows = list(records.get(kind, ()))
            fields = _union_fields(rows)
            self._fields[kind] = fields
            csv_path, json_path = self.paths(kind)
            text = io.StringIO()
            if fields:
                writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            _atomic_write_text(csv_path, text.getvalue())
            lines = "".join(
                json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in rows
            )
            _atomic_write_text(json_path, lines)

    def append(
        self, kind: str, record: Mapping[str, Any], all_records: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``record``; ``all_records`` (the kind's full history, ``record`` included)
        is used to rewrite the CSV when ``record`` brings a new column."""
        fields = self._fields.get(kind)
        if fields is None or any(k not in fields for k in record):
            self.reset({**{k: () for k in self.kinds}, kind: all_records})
            return
        csv_path, json_path = self.paths(kind)
        with open(csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, restval="", lineterminator="\n").writerow(record)
        with open(json_path, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")


def _union_fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    return fields


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def tensorboard_writer(folder: str | os.PathLike, mode: bool | str = "auto"):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``folder``, or ``None``.

    Args:
        mode: ``"auto"``: a writer if the ``tensorboard`` package is installed, else
            ``None`` silently; ``True``: a writer, or ``ImportError`` saying what to
            install; ``False``: ``None``.
    """
    if mode not in ("auto", True, False):
        raise ValueError(f"tensorboard: expected 'auto', True or False, got {mode!r}")
    if mode is False:
        return None
    try:
        module = importlib.import_module("torch.utils.tensorboard")
        writer_class = module.SummaryWriter
    except (ImportError, AttributeError) as err:
        if mode == "auto":
            return None
        raise ImportError(
            "tensorboard=True needs the tensorboard package (pip install tensorboard)"
        ) from err
    return writer_class(log_dir=str(folder))
