"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts): nothing in it
needs code to be rebuilt, so it is read with ``weights_only=True`` and a file that
would need arbitrary code is refused. Writing goes to a temporary file in the same
folder, flushed and ``fsync``-ed, then ``os.replace``-d over the target: a reader (or a
crash) sees the old file or the new one, never half of one.

The newest good checkpoint is never overwritten in place: before ``latest.pt`` is
replaced, the file it names becomes ``previous.pt`` (a hard link, so no copy), and
:func:`load_latest` falls back to it (then to the numbered ``checkpoint-<step>.pt``
files) when ``latest.pt`` turns out to be truncated or corrupt.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._validation import check_int
from .files import atomic_write_bytes, keep_as, link_atomically

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointMismatch",
    "check_model_state",
    "save_checkpoint",
    "load_checkpoint",
    "numbered_checkpoints",
    "load_latest",
    "remove_stale_temporaries",
    "CheckpointWarning",
    "LATEST",
    "PREVIOUS",
]

CHECKPOINT_FORMAT = "unrolled.train.checkpoint"
CHECKPOINT_VERSION = 1
LATEST = "latest.pt"
PREVIOUS = "previous.pt"
_NUMBERED = re.compile(r"^checkpoint-(\d+)\.pt$")
REQUIRED_KEYS = ("format", "version", "model", "optimizer", "epoch", "iteration", "step", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: unreadable, truncated, unsafe or foreign."""


class CheckpointMismatch(CheckpointError, ValueError):
    """A readable checkpoint that does not fit: another seed, a tensor of another shape,
    missing or extra tensors, or non-finite weights."""


class CheckpointWarning(UserWarning):
    """A checkpoint was unusable and an older one is used instead."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file, fsync and ``os.replace``.

    The object is serialised in memory first and written with plain file I/O: torch's
    own writer reports a full disk as an internal assertion, while ``write`` gives the
    errno, which :class:`~unrolled.train.files.RunWriteError` turns into words.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getbuffer(), path, "checkpoint")


def numbered_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>.pt`` files in ``folder``, oldest (smallest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NUMBERED.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.latest.pt.*.tmp``
    and the like; never a checkpoint itself) and return them. Call it only where no
    other process is writing checkpoints to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for pattern in (f".{LATEST}.*.tmp", f".{PREVIOUS}.*.tmp", ".checkpoint-*.pt.*.tmp"):
        for path in folder.glob(pattern):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def save_checkpoint(
    state: dict, folder: str | os.PathLike, *, step: int, keep_last: int = 0
) -> Path:
    """Write ``state`` as ``folder/latest.pt`` (atomically); with ``keep_last > 0`` also as
    ``folder/checkpoint-<step>.pt``, keeping the ``keep_last`` newest numbered files.

    ``state`` gets the ``format`` and ``version`` keys added. The file ``latest.pt``
    named before the call stays as ``folder/previous.pt``. Returns the path of
    ``latest.pt``.

    Raises:
        RunWriteError: the file could not be written (full disk, permission); the message
            names it and the reason. ``latest.pt`` is then the previous checkpoint, whole.
    """
    keep_last = check_int("keep_last", keep_last, minimum=0)
    folder = Path(folder)
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    latest = folder / LATEST
    # The checkpoint named before keeps a name while latest.pt is replaced.
    keep_as(latest, folder / PREVIOUS)
    if keep_last == 0:
        return atomic_torch_save(state, latest)
    numbered = atomic_torch_save(state, folder / f"checkpoint-{step:09d}.pt")
    # latest.pt becomes a second name of the numbered file (one write, atomic rename);
    # where hard links are not supported it is written again.
    if not link_atomically(numbered, latest):
        atomic_torch_save(state, latest)
    for old in numbered_checkpoints(folder)[:-keep_last]:
        with contextlib.suppress(OSError):
            old.unlink()
    return latest


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupt, would need arbitrary code to
            load (a pickled object: refused), or is not an ``unrolled`` checkpoint of a
            known version. The message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    _check_integrity(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is long and styled; the name of the offending global says it all.
        # Only a reference to code is "unsafe": any other unpickling failure is damage.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CheckpointError(
                f"checkpoint {path}: damaged, its data cannot be decoded "
                f"({str(err).splitlines()[0]})"
            ) from err
        raise CheckpointError(
            f"checkpoint {path}: refused, it holds objects that need arbitrary code to "
            f"load (it would call {found.group(1)}); only tensors and plain types are accepted"
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError/... on damaged files
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"checkpoint {path}: damaged, the file is truncated or corrupt "
            f"({type(err).__name__}: {first})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: not an unrolled training checkpoint (expected a dict with "
            f"format={CHECKPOINT_FORMAT!r})"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {state.get('version')!r}, this version of "
            f"unrolled reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing keys {missing}")
    return state


def _check_integrity(path: Path) -> None:
    """Refuse a file whose bytes changed since it was written.

    A checkpoint is a zip archive whose members carry a CRC-32 each, but ``torch.load``
    does not verify them: a flipped byte in a tensor would load as a wrong weight. The
    zip module checks every member (one extra read of the file).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return  # not a zip archive (or its directory is gone): torch.load says which
    except (OSError, EOFError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path}: damaged, the file cannot be read ({type(err).__name__}: {err})"
        ) from err
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path}: damaged, its member {bad!r} fails its checksum (the file "
            "changed after it was written)"
        )


def check_model_state(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], path: str | os.PathLike
) -> None:
    """Check that the ``found`` weights (a checkpoint's ``"model"``) fit a model whose own
    state dict is ``expected``, before loading them.

    Raises:
        CheckpointMismatch: naming the tensor and both shapes, the missing or extra
            tensors, or a tensor holding NaN or infinite values.
    """
    if not isinstance(found, Mapping):
        raise CheckpointMismatch(
            f"checkpoint {path}: model: expected a dict of tensors, got {type(found).__name__}"
        )
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        raise CheckpointMismatch(
            f"checkpoint {path}: does not fit this model (missing tensors {missing[:5]}, "
            f"unexpected tensors {extra[:5]}); was it written with another configuration?"
        )
    for name, mine in expected.items():
        theirs = found[name]
        if not isinstance(theirs, torch.Tensor):
            raise CheckpointMismatch(
                f"checkpoint {path}: tensor {name!r}: expected a tensor, got "
                f"{type(theirs).__name__}"
            )
        if tuple(theirs.shape) != tuple(mine.shape):
            raise CheckpointMismatch(
                f"checkpoint {path}: tensor {name!r} has shape {tuple(theirs.shape)}, the "
                f"model's has shape {tuple(mine.shape)}"
            )
        if (theirs.is_floating_point() or theirs.is_complex()) and not bool(
            torch.isfinite(theirs).all()
        ):
            bad = int((~torch.isfinite(theirs)).sum())
            raise CheckpointMismatch(
                f"checkpoint {path}: tensor {name!r} holds {bad} NaN or infinite value(s) "
                f"of {theirs.numel()}; the file is damaged or the run had diverged"
            )


def load_latest(folder: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict, Path] | None:
    """The newest usable checkpoint in ``folder``: ``(state, path)``, or ``None`` if the
    folder holds no checkpoint at all.

    Tries ``latest.pt``, then ``previous.pt``, then the numbered checkpoints newest
    first. Each unusable file is reported by a :class:`CheckpointWarning` naming it and
    saying why; if every file is unusable, :class:`CheckpointError` lists them all.
    A file that does not exist is not an error.
    """
    folder = Path(folder)
    candidates = [folder / LATEST, folder / PREVIOUS, *reversed(numbered_checkpoints(folder))]
    seen: set[tuple[int, int]] = set()
    failures: list[str] = []
    for path in candidates:
        try:
            st = path.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # another name of a file already tried (hard link)
        seen.add((st.st_dev, st.st_ino))
        try:
            return load_checkpoint(path, map_location=map_location), path
        except CheckpointError as err:
            failures.append(str(err))
            warnings.warn(f"{err}; trying an older checkpoint", CheckpointWarning, stacklevel=2)
    if failures:
        raise CheckpointError(f"no usable checkpoint in {folder}: " + "; ".join(failures))
    return None
