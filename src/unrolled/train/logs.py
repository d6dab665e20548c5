"""Run logs: CSV and JSON lines files, and TensorBoard scalars when available.

Each kind of record (``"train"``: one per iteration, ``"eval"``: one per evaluation)
goes to ``<kind>_log.csv`` and ``<kind>_log.jsonl`` in the output folder, one line
appended per record. The kinds are independent: writing one kind never touches the
other's files. On resume the files are cut back to the checkpoint's history
(:meth:`RunLog.reset`), so rows that a killed run wrote after its last checkpoint are
neither duplicated nor kept, and every step appears exactly once.

A write that fails (full disk, permission) raises
:class:`~unrolled.train.files.RunWriteError` naming the file; the line being appended
is taken back, so the files keep whole lines only.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes, writing

__all__ = ["RunLog", "logged", "tensorboard_writer"]


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null rather than produce an invalid file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n"


def logged(records: Sequence[Mapping[str, Any]], log_every: int) -> list[Mapping[str, Any]]:
    """The training records a run with ``log_every`` wrote to its files (steps that are
    multiples of ``log_every``): what :meth:`RunLog.reset` restores on resume."""
    return [r for r in records if int(r.get("step", 0)) % log_every == 0]


class RunLog:
    """Appends records (flat dicts of numbers) to ``<kind>_log.csv`` and ``.jsonl``."""

    def __init__(self, folder: str | os.PathLike, kinds: Sequence[str] = ("train", "eval")):
        self.folder = Path(folder)
        self.kinds = tuple(kinds)
        self._fields: dict[str, list[str]] = {}
        # The records in each kind's files, so a new column can rewrite that kind alone.
        self._rows: dict[str, list[Mapping[str, Any]]] = {}

    def paths(self, kind: str) -> tuple[Path, Path]:
        return self.folder / f"{kind}_log.csv", self.folder / f"{kind}_log.jsonl"

    def reset(self, records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Rewrite every kind's files with exactly ``records[kind]`` (atomically): empty
        files for a fresh run, the checkpoint's history on resume."""
        with writing("log folder", self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        for kind in self.kinds:
            self._rewrite(kind, list(records.get(kind, ())))

    def _rewrite(self, kind: str, rows: list[Mapping[str, Any]]) -> None:
        fields = _union_fields(rows)
        csv_path, json_path = self.paths(kind)
        text = io.StringIO()
        if fields:
            writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_bytes(text.getvalue().encode(), csv_path, "log")
        atomic_write_bytes("".join(map(_json_line, rows)).encode(), json_path, "log")
        self._fields[kind] = fields
        self._rows[kind] = rows

    def append(
        self,
        kind: str,
        record: Mapping[str, Any],
        all_records: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Append ``record`` to ``kind``'s files. A record with a column the CSV has not
        seen rewrites that kind's CSV with the wider header (the other kinds are left
        alone). ``all_records`` is accepted for compatibility and not needed."""
        if kind not in self._rows:
            self._rows[kind] = []
            self._fields[kind] = []
        fields = self._fields[kind]
        csv_path, json_path = self.paths(kind)
        if any(k not in fields for k in record):
            self._rewrite(kind, [*self._rows[kind], record])
            return
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=fields, restval="", lineterminator="\n").writerow(record)
        _append_whole(csv_path, line.getvalue())
        _append_whole(json_path, _json_line(record))
        self._rows[kind].append(record)


def _append_whole(path: Path, text: str) -> None:
    """Append ``text`` (whole lines); on failure cut the file back to its old end, so a
    full disk never leaves half a line (truncating needs no free space). Unbuffered, so
    nothing is left in a buffer to be written again on close."""
    data = text.encode()
    with writing("log", path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def _union_fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    return fields


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
