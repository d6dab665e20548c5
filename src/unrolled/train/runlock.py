"""One writer per run folder: an exclusive lock held for a run's whole life.

Two runs writing into one folder interleave their logs and leave a configuration from
one beside the checkpoint of the other. :class:`RunLock` takes an OS-level exclusive
lock (``fcntl.flock``) on ``<folder>/.unrolled.lock`` and writes its process id there.
The operating system releases the lock when the process ends, however it ends
(``SIGKILL`` included), so a lock is never left behind by a dead process; the id a dead
holder left in the file is reported when the lock is taken over. A second run on the
same folder gets :class:`RunLockedError` at once, naming the folder and the holder.

Within one process the lock is re-entrant (the command takes it first, the trainer
again inside). The processes a run starts itself (``unrolled train --nproc N``) are
told through the environment (:data:`HOLDER_ENV`) that their launcher holds the lock
for them: only one process of a run ever holds it.

The lock file is never deleted: removing it while another process waits on the old
file would let two processes lock two different files of the same name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

from .files import writing

try:
    import fcntl
except ImportError:  # Windows: no flock; the process id in the file is used alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["HOLDER_ENV", "LOCK_NAME", "RunLock", "RunLockedError", "lock_holder"]

LOCK_NAME = ".unrolled.lock"
#: ``<pid>:<folder>``: a launcher that holds the lock of ``folder`` for its children
HOLDER_ENV = "UNROLLED_RUN_LOCK_HOLDER"

_held: dict[Path, list] = {}  # folder -> [file descriptor, depth]
_guard = threading.Lock()


class RunLockedError(RuntimeError):
    """Another process is writing in the run folder; the message names it and its PID."""

    def __init__(self, folder: Path, pid: int | None):
        self.folder = folder
        self.pid = pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"out: {folder} is in use by another unrolled run ({who} holds "
            f"{folder / LOCK_NAME}); wait for it to end, stop it, or choose another --out"
        )


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def lock_holder(folder: str | os.PathLike) -> int | None:
    """The process id recorded in ``folder``'s lock file (the current or last holder)."""
    return _read_pid(Path(folder) / LOCK_NAME)


def _held_for_us(folder: Path) -> bool:
    """Whether our launcher holds the lock of ``folder`` on our behalf."""
    value = os.environ.get(HOLDER_ENV, "")
    pid, _, where = value.partition(":")
    if not pid.isdigit() or Path(where) != folder:
        return False
    return _read_pid(folder / LOCK_NAME) == int(pid) and _alive(int(pid))


class RunLock:
    """``with RunLock(folder):`` holds the run lock of ``folder`` inside the block.

    Raises :class:`RunLockedError` when another process holds it. ``previous_holder``
    is the process id that a run which ended without releasing the lock (killed) left
    in the file, or ``None``; ``message`` says so in words (``None`` when nothing was
    taken over).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).resolve()
        self.previous_holder: int | None = None
        self.message: str | None = None
        self._entered = False
        self._on_behalf = False

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> RunLock:
        with _guard:
            if self.folder in _held:
                _held[self.folder][1] += 1
                self._entered = True
                return self
            if _held_for_us(self.folder):
                self._on_behalf = self._entered = True
                return self
            with writing("run lock", self.path):
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock(fd)
                self._record(fd)
            except BaseException:
                os.close(fd)
                raise
            _held[self.folder] = [fd, 1]
            self._entered = True
            return self

    def _lock(self, fd: int) -> None:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(self.folder, _read_pid(self.path)) from None
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
        # No OS lock on this filesystem: a living process named in the file holds it.
        pid = _read_pid(self.path)
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise RunLockedError(self.folder, pid)

    def _record(self, fd: int) -> None:
        old = _read_pid(self.path)
        if old is not None and old != os.getpid():
            # The file still names a holder, yet the lock was free: that run was killed.
            self.previous_holder = old
            state = "no longer running" if not _alive(old) else "which no longer holds it"
            self.message = (
                f"took over the lock of {self.folder} left by process {old} ({state}; "
                "it ended without releasing it)"
            )
        # The id is information, the flock is the lock: a full disk that cannot take these
        # few bytes must not stop a run (or its resume) from starting.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if not self._entered:
            return
        self._entered = False
        if self._on_behalf:
            return
        with _guard:
            entry = _held.get(self.folder)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self.folder]
            fd = entry[0]
            # An empty file says "released cleanly"; a process id left in it says the
            # holder was killed (reported by the next one).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def environment(self) -> dict[str, str]:
        """What to add to the environment of processes this run starts, so they know the
        lock is held for them (see :data:`HOLDER_ENV`)."""
        return {HOLDER_ENV: f"{os.getpid()}:{self.folder}"}
