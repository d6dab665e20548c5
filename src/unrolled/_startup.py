"""Ctrl-C while the ``unrolled`` command is still loading its libraries.

``python -m unrolled`` and the ``unrolled`` script import this package (and torch, a few
seconds on a busy machine) before the command's own code runs, so a SIGINT in that window
would end in a traceback through torch's import machinery. When the process is the
command, an uncaught ``KeyboardInterrupt`` is reported in one line instead; Python still
ends the process as killed by SIGINT (exit status 130 in a shell). The command removes the
hook (:func:`uninstall`) as soon as its own code runs, which handles SIGINT itself. A
program that imports the library is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _is_command() -> bool:
    # ``python -m unrolled`` (the interpreter's own command line says which module), or
    # the installed script, named after the package.
    line = list(getattr(sys, "orig_argv", ()))
    if "-m" in line:
        i = line.index("-m")
        return line[i + 1 : i + 2] == ["unrolled"]
    first = sys.argv[0] if sys.argv else ""
    return Path(first).name == "unrolled"


def install() -> None:
    """Report an uncaught ``KeyboardInterrupt`` in one line (the command only)."""
    if not _is_command():
        return
    global _previous
    if _previous is not None:
        return
    _previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print(
                "unrolled: stopped by SIGINT while starting, before any file was written",
                file=sys.stderr,
                flush=True,
            )
        else:
            _previous(kind, value, tb)

    sys.excepthook = hook


def uninstall() -> None:
    """Give back the previous ``sys.excepthook``."""
    global _previous
    if _previous is not None:
        sys.excepthook = _previous
        _previous = None


_previous = None


install()
