"""Ctrl-C while the ``unrolled`` command is still loading its libraries.

``python -m unrolled`` and the ``unrolled`` script import this package (and torch, a few
seconds on a busy machine) before the command's own code runs. A ``KeyboardInterrupt``
raised in that window surfaces wherever the import happens to be; inside NumPy's or
torch's import machinery it can even turn into a different error (a half-initialised
module imported again recurses without end). So while the command loads, SIGINT does
not raise at all: a handler prints one line and ends the process as killed by SIGINT
(exit status 130 in a shell). Nothing has been written yet, so there is nothing to save.
The command removes the handler (:func:`uninstall`) as soon as its own code runs, which
handles SIGINT itself. A program that imports the library is left alone, and so is a
process that ignores SIGINT (a background job).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

MESSAGE = "unrolled: stopped by SIGINT while starting, before any file was written\n"


def _is_command() -> bool:
    # ``python -m unrolled`` (the interpreter's own command line says which module), or
    # the installed script, named after the package.
    line = list(getattr(sys, "orig_argv", ()))
    if "-m" in line:
        i = line.index("-m")
        return line[i + 1 : i + 2] == ["unrolled"]
    first = sys.argv[0] if sys.argv else ""
    return Path(first).name == "unrolled"


def _stop(signum, frame) -> None:
    # Only async-signal-safe work: one write, then die by the signal itself so the
    # parent sees "killed by SIGINT", as it would without this handler.
    os.write(2, MESSAGE.encode())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def install() -> None:
    """While the command loads, end the process in one line on SIGINT (the command only)."""
    global _previous
    if _previous is not None or not _is_command():
        return
    current = signal.getsignal(signal.SIGINT)
    if current is not signal.default_int_handler:
        return  # ignored (a background job) or someone else's handler: leave it
    _previous = current
    signal.signal(signal.SIGINT, _stop)


def uninstall() -> None:
    """Give back the SIGINT handler there was before :func:`install`."""
    global _previous
    if _previous is not None:
        signal.signal(signal.SIGINT, _previous)
        _previous = None


_previous = None


install()
