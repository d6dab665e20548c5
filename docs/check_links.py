"""Check the built HTML site: every internal link, image and script resolves, every
``#fragment`` names an element of its page, and no page links outside the site.

    python3 docs/check_links.py docs/_build/html

Exits 1 and lists each problem as ``page: target (why)``.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Attributes that load or link a resource.
LINK_ATTRS = {("a", "href"), ("link", "href"), ("img", "src"), ("script", "src"), ("source", "src")}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if (tag, name) in LINK_ATTRS and value is not None:
                self.links.append(value)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def check(root: Path) -> list[str]:
    pages = {p: parse(p) for p in sorted(root.rglob("*.html"))}
    problems = []
    for path, page in pages.items():
        where = path.relative_to(root)
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme in ("mailto", "javascript", "data"):
                continue
            if parts.scheme or parts.netloc:
                problems.append(f"{where}: {link} (links outside the site)")
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: {link} (no such file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: {link} (no element with this id)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    if not (root / "index.html").is_file():
        print(f"{root}: no index.html; build the site first", file=sys.stderr)
        return 2
    problems = check(root)
    for problem in problems:
        print(problem)
    n = sum(1 for _ in root.rglob("*.html"))
    print(f"{n} pages checked, {len(problems)} broken or external links")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
