"""What the package carries: one version, type information, a licence and a changelog.

Building the wheel and installing it into a fresh environment is ``.ci/check_package``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import unrolled

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_has_one_source():
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "unrolled.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", unrolled.__version__)


def test_changelog_names_the_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(unrolled.__version__)}\b", text, re.M)


def test_py_typed_and_licence_are_shipped():
    assert (ROOT / "src" / "unrolled" / "py.typed").is_file()
    project = pyproject()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["unrolled"]
    assert project["project"]["license"] == "BSD-3-Clause"
    assert project["project"]["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "BSD 3-Clause" in licence and "The unrolled developers" in licence
