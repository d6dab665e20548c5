"""Writing a run's files: errors that name the file and the reason, atomic replacement.

A full disk or a read-only folder must end a run with one line that says which file
could not be written and why (``no space left on device``, ``permission denied``),
not with the writer's internal error. Every write of the training library (checkpoints,
logs, figures, the saved configuration) goes through :func:`writing`, which turns the
``OSError`` (and the ``RuntimeError`` torch's serializer raises on a short write) into a
:class:`RunWriteError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "RunWriteError",
    "atomic_write_bytes",
    "fsync_dir",
    "keep_as",
    "link_atomically",
    "reason_of",
    "writing",
]


class RunWriteError(OSError):
    """A run's file could not be written; the message names the file and the reason.

    Attributes:
        path: the file.
        reason: the reason in words (``"no space left on device"``, ...).
    """

    def __init__(self, what: str, path: str | os.PathLike, reason: str, err_no: int | None):
        self.path = Path(path)
        self.reason = reason
        message = f"cannot write {what} {self.path}: {reason}"
        if err_no is not None:
            super().__init__(err_no, message)
        else:
            super().__init__(message)

    def __str__(self) -> str:  # OSError's default adds "[Errno 28]" in front
        return self.args[-1]


def reason_of(err: BaseException) -> tuple[str, int | None]:
    """``(reason in words, errno or None)`` of a failed write."""
    if isinstance(err, OSError) and err.errno is not None:
        return os.strerror(err.errno).lower(), err.errno
    if isinstance(err, OSError) and err.args:
        return str(err.args[-1]), None
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", None


@contextlib.contextmanager
def writing(what: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` inside the block into a :class:`RunWriteError` naming ``path``."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as err:
        reason, err_no = reason_of(err)
        raise RunWriteError(what, path, reason, err_no) from err


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; not possible on every platform/filesystem."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(data: bytes | memoryview, path: str | os.PathLike, what: str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and
    ``os.replace``: readers see the old file or the new one, never part of one. On failure
    the temporary file is removed, the old file is untouched, and :class:`RunWriteError`
    names ``path``."""
    path = Path(path)
    with writing(what, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp makes the file private (0600): give it the mode a plain open() would.
            os.chmod(tmp, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    fsync_dir(path.parent)
    return path


def link_atomically(source: Path, target: Path) -> bool:
    """Make ``target`` a second name of ``source`` (hard link to a temporary name, then an
    atomic rename); ``False`` where hard links are not supported."""
    with contextlib.suppress(OSError):
        if os.path.samefile(source, target):
            return True  # already; and renaming a link over the same file would be a no-op
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    finally:
        # POSIX: renaming a hard link over another name of the same file does nothing and
        # leaves the source name; a writer racing us could have made that happen.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(target.parent)
    return True


def keep_as(source: Path, target: Path) -> None:
    """Give ``source`` (if it exists) the name ``target`` too, so that replacing
    ``source`` afterwards never loses the file it holds now: a hard link, or where
    those are not supported a copy through a temporary file. A copy that does not fit
    on the disk is given up (``source`` itself stays as it is)."""
    if source.is_file() and not link_atomically(source, target):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f, open(source, "rb") as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
