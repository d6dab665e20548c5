"""``safe_extract``: unpack a zip or tar archive, refusing every member that could write
outside the target folder."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["UnsafeArchiveError", "archive_format", "safe_extract"]

# A symlink chain longer than this is refused (the same bound as Linux's ELOOP).
_MAX_LINK_HOPS = 40


class UnsafeArchiveError(ValueError):
    """An archive member would write outside the target folder, or is a device/special file."""


def archive_format(path: str | os.PathLike[str]) -> str | None:
    """``"zip"``, ``"tar"`` (plain, gzip, bzip2 or xz) or ``None``, read from the file's
    content, not its name."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return None


def _parts(name: str, archive: Path, what: str = "member") -> list[str]:
    """Path components of a member name, refusing absolute names and drive letters."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) >= 2 and unified[1] == ":"):
        raise UnsafeArchiveError(
            f"archive {str(archive)!r}: {what} {name!r} is an absolute path; refused"
        )
    return [p for p in unified.split("/") if p not in ("", ".")]


class _Tree:
    """The folder tree an archive would create, to resolve paths through its symlinks.

    Resolving component by component (as the kernel does) catches the escapes a lexical
    check misses, e.g. ``a -> .`` then ``b -> a/..``, whose text stays inside but whose real
    target is the target folder's parent.
    """

    def __init__(self, archive: Path, links: dict[str, str]) -> None:
        self.archive = archive
        self.links = links

    def resolve(self, parts: list[str], shown: str, follow_last: bool = True) -> list[str]:
        out: list[str] = []
        todo = list(parts)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not out:
                    raise UnsafeArchiveError(
                        f"archive {str(self.archive)!r}: {shown} points outside the target "
                        "folder; refused"
                    )
                out.pop()
                continue
            out.append(part)
            key = "/".join(out)
            if key in self.links and (todo or follow_last):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise UnsafeArchiveError(
                        f"archive {str(self.archive)!r}: {shown} goes through more than "
                        f"{_MAX_LINK_HOPS} symlinks; refused"
                    )
                out.pop()
                todo = _parts(self.links[key], self.archive, f"symlink {key!r} target") + todo
        return out


def _check_tar(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    links: dict[str, str] = {}
    for m in members:
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchiveError(
                f"archive {str(archive)!r}: member {m.name!r} is a device, FIFO or other "
                "special file; refused"
            )
        parts = _parts(m.name, archive)
        if m.issym():
            # A link's target is relative to the folder holding the link.
            _parts(m.linkname, archive, f"symlink {m.name!r} target")
            target = "/".join([*parts[:-1], m.linkname]) if parts[:-1] else m.linkname
            links["/".join(parts)] = target
    tree = _Tree(archive, links)
    for m in members:
        parts = _parts(m.name, archive)
        shown = f"member {m.name!r}"
        # Where the member itself lands: its folders resolved through the archive's symlinks;
        # a file written over a symlink would follow it, so regular files follow the last one.
        tree.resolve(parts, shown, follow_last=not m.issym())
        if m.issym():
            tree.resolve(_parts(links["/".join(parts)], archive), f"symlink {m.name!r}")
        elif m.islnk():
            # Hard link names are relative to the archive root.
            tree.resolve(
                _parts(m.linkname, archive, f"hard link {m.name!r} target"),
                f"hard link {m.name!r} -> {m.linkname!r}",
            )
    return members


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        parts = _parts(info.filename, archive)
        if ".." in parts:
            depth = 0
            for p in parts:
                depth += -1 if p == ".." else 1
                if depth < 0:
                    raise UnsafeArchiveError(
                        f"archive {str(archive)!r}: member {info.filename!r} points outside "
                        "the target folder; refused"
                    )
        # Unix file type bits, when the archive recorded any (0: none, a plain entry).
        kind = stat.S_IFMT(info.external_attr >> 16)
        # zipfile cannot create symlinks: it would write the link's target text as an ordinary
        # file, which is never what the archive meant, so symlink entries are refused.
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(
                f"archive {str(archive)!r}: member {info.filename!r} is a symlink or special "
                "file, which zip extraction does not support; refused"
            )


def safe_extract(archive_path: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> Path:
    """Extract a zip or tar (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) archive
    into ``target_dir`` and return it.

    Every member is checked before anything is written; refused (``UnsafeArchiveError``):
    absolute names, names whose ``..`` leave the target, symlinks or hard links whose target
    (resolved through the archive's own symlinks) leaves it, device files, FIFOs, and symlink
    entries in zip files. Members are extracted into a temporary folder next to
    ``target_dir``, which is renamed into place only when all went well, so a refused or
    broken archive leaves nothing behind. ``target_dir`` must not exist or be an empty folder.
    """
    archive = Path(archive_path)
    target = Path(target_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive_path {str(archive)!r} is not a file")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(
            f"target_dir {str(target)!r} already exists and is not an empty folder"
        )
    kind = archive_format(archive)
    if kind is None:
        raise ValueError(
            f"archive_path {str(archive)!r} is not a zip or tar archive (plain, gz, bz2, xz)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, archive)
                zf.extractall(staging)
        else:
            with tarfile.open(archive, "r:*") as tar:
                members = _check_tar(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    # A second, independent line of defence where Python has it (3.10.12+,
                    # 3.11.4+): it also drops set-uid bits and the like.
                    tar.extractall(staging, members=members, filter="data")
                else:
                    tar.extractall(staging, members=members)
        if target.exists():
            target.rmdir()  # empty (checked above); rename cannot replace it everywhere
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
