"""Build helpers for the documentation site (a small Sphinx extension).

- ``gallery_argv``: the command-line arguments each gallery example runs with. The docs
  build uses small sizes so the whole site builds in a few minutes on two CPU cores;
  ``UNROLLED_DOCS_FULL=1`` runs every example at its own defaults instead.
- ``runnable_examples_pattern``: examples that need an optional package which is not
  installed are shown with their code but not run.
- ``missing_optional_modules``: optional packages the API reference imports, mocked when
  absent so their pages still build.
- The API page of ``unrolled.interop.deepinv`` shows a note instead of the module when
  the module is not part of the checkout.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Arguments for the docs build, by file name: an example slower than about a minute at its
# defaults gets smaller sizes here (its defaults stay what a user gets). Those below run in
# seconds at their defaults, so they run as a user would run them.
GALLERY_ARGS: dict[str, list[str]] = {}

# Optional packages an example or the API reference may import.
OPTIONAL = ("deepinv",)

INTEROP_MODULE = "unrolled.interop.deepinv"
INTEROP_DOC = "api/interop"
INTEROP_ABSENT = (
    "The ``unrolled.interop.deepinv`` module is not part of this build of the package; "
    "its reference appears here when it is."
)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_optional_modules() -> list[str]:
    return [name for name in OPTIONAL if not _installed(name)]


def runnable_examples_pattern() -> str:
    """A regex matching the examples to run: all, less those needing a missing package."""
    skip = []
    missing = missing_optional_modules()
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        needs = [m for m in missing if re.search(rf"^\s*(import|from)\s+{m}\b", text, re.M)]
        # The interop module imports deepinv when used: it needs what deepinv needs.
        if "unrolled.interop" in text and (
            "deepinv" in missing or not _installed(INTEROP_MODULE.rsplit(".", 1)[0])
        ):
            needs.append("unrolled.interop")
        if needs:
            skip.append(re.escape(path.name))
    if not skip:
        return r"\.py$"
    return rf"^(?!.*[\\/]({'|'.join(skip)})$).*\.py$"


def gallery_argv(gallery_conf, script_vars) -> list[str]:
    if os.environ.get("UNROLLED_DOCS_FULL", "") not in ("", "0"):
        return []
    return list(GALLERY_ARGS.get(Path(script_vars["src_file"]).name, []))


def _interop_page(app, docname: str, source: list[str]) -> None:
    """Without the interop module, its API page says so instead of failing to import it."""
    if docname != INTEROP_DOC or _has_interop():
        return
    source[0] = re.sub(
        r"^\.\. automodule:: unrolled\.interop\.deepinv\n(   .*\n)*",
        INTEROP_ABSENT + "\n",
        source[0],
        flags=re.M,
    )


def _has_interop() -> bool:
    try:
        return importlib.util.find_spec(INTEROP_MODULE) is not None
    except ImportError:
        return False


def setup(app):
    app.connect("source-read", _interop_page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
