"""The documentation's code runs as shown, and its pages are all in the site's tables of
contents.

Every Python block of the user guide and the getting-started page is run in order, one
namespace per page (the blocks of a page build on each other). The site itself is built,
with warnings as errors, by ``.ci/run``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted([DOCS / "getting-started.md", *(DOCS / "guide").glob("*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run(page):
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)


def test_every_page_is_in_a_toctree():
    """A page missing from every toctree would be built but unreachable from the nav."""
    listed = set()
    for source in DOCS.rglob("*.md"):
        if "_build" in source.parts:
            continue
        for block in re.findall(r"```\{toctree\}\n(.*?)```", source.read_text(), re.S):
            for line in block.splitlines():
                line = line.strip()
                if line and not line.startswith(":"):
                    listed.add((source.parent / line).resolve().relative_to(DOCS.resolve()))
    pages = {
        p.relative_to(DOCS).with_suffix("")
        for p in [*DOCS.glob("*.md"), *DOCS.glob("guide/*.md"), *DOCS.glob("api/*.rst")]
        if p.name != "index.md" or p.parent.name in ("guide", "api")
    }
    assert pages - {Path(p) for p in listed} == set()
