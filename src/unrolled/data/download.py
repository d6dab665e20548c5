"""``download_dataset``: fetch a dataset archive once, check it, unpack it into a cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .._validation import check_instance, check_real, describe
from .archive import archive_format, safe_extract

__all__ = [
    "KNOWN_DATASETS",
    "ChecksumError",
    "DownloadError",
    "KnownDataset",
    "cache_dir",
    "dataset_dir",
    "download_dataset",
]


@dataclass(frozen=True)
class KnownDataset:
    """A dataset ``download_dataset`` knows by name: where it is and, when known for certain,
    the SHA-256 of its archive (``None``: not checked)."""

    name: str
    url: str
    sha256: str | None
    description: str


# No checksum is recorded for either archive: none was available that could be verified
# here (no network), and an invented one would only break downloads. GitHub's generated
# branch archives are not even guaranteed byte-stable. Pass sha256= to pin one.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "BSDS500": KnownDataset(
        "BSDS500",
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
        None,
        "Berkeley Segmentation Data Set 500 (BSR bundle): 500 natural images, 481x321, in "
        "BSR/BSDS500/data/images/{train,val,test}",
    ),
    "CBSD68": KnownDataset(
        "CBSD68",
        "https://github.com/clausmichele/CBSD68-dataset/archive/refs/heads/master.zip",
        None,
        "Colour BSD68 denoising test set (68 images), in CBSD68-dataset-master/CBSD68/original_png",
    ),
}
_ALIASES = {"bsd500": "BSDS500", "bsds500": "BSDS500", "cbsd68": "CBSD68"}

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DownloadError(OSError):
    """A download failed (network, HTTP status, timeout); the message says where to put the
    files by hand."""


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 is not the expected one."""


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$UNROLLED_CACHE``, else
    ``$XDG_CACHE_HOME/unrolled``, else ``~/.cache/unrolled`` (empty variables count as
    unset)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("UNROLLED_CACHE"):
        return Path(os.environ["UNROLLED_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "unrolled"
    return Path.home() / ".cache" / "unrolled"


_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")


def _archive_suffix(filename: str) -> str | None:
    """The archive ending of ``filename`` (case-insensitive), or ``None``."""
    return next((x for x in _ARCHIVE_SUFFIXES if filename.lower().endswith(x)), None)


def _resolve(name_or_url: str) -> tuple[str, str | None, str]:
    """(url, known sha256 or None, folder name) of a known name or a URL."""
    if not isinstance(name_or_url, str):
        raise TypeError(
            f"name_or_url: expected a dataset name or a URL, got {describe(name_or_url)}"
        )
    key = _ALIASES.get(name_or_url.lower())
    if key is not None:
        known = KNOWN_DATASETS[key]
        return known.url, known.sha256, known.name
    if "://" not in name_or_url:
        raise ValueError(
            f"name_or_url: expected one of {sorted(KNOWN_DATASETS)} (or BSD500) or a URL, "
            f"got {name_or_url!r}"
        )
    parts = urllib.parse.urlsplit(name_or_url)
    if parts.scheme not in ("http", "https", "file"):
        raise ValueError(
            f"name_or_url: expected an http, https or file URL, got scheme {parts.scheme!r}"
        )
    stem = Path(urllib.parse.unquote(parts.path)).name or "download"
    suffix = _archive_suffix(stem)
    if suffix and len(stem) > len(suffix):
        stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "download"
    # The URL's digest keeps two URLs with the same file name apart.
    return name_or_url, None, f"{stem}-{hashlib.sha256(name_or_url.encode()).hexdigest()[:8]}"


def dataset_dir(name_or_url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder where ``download_dataset(name_or_url, root)`` puts (or finds) the data."""
    return cache_dir(root) / _resolve(name_or_url)[2]


def _populated(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _fetch(url: str, dest: Path, folder: Path, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``dest``; return the SHA-256 hex digest of what was written."""
    digest = hashlib.sha256()
    manual = (
        f"If this machine is offline, put the files there by hand: download {url} elsewhere "
        f"and extract its contents into {folder} (create that folder; the archive's top-level "
        "entries go directly in it), then call again: a non-empty folder there is used as is, "
        "without network."
    )
    request = urllib.request.Request(url, headers={"User-Agent": "unrolled (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with (
                open(dest, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=folder.name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"could not download {url}: HTTP {err.code} {err.reason}. {manual}"
        ) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}. {manual}") from err
    return digest.hexdigest()


def download_dataset(
    name_or_url: str,
    root: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack a dataset once; return its folder.

    ``name_or_url``: ``"BSDS500"`` (alias ``"BSD500"``), ``"CBSD68"`` (see
    :data:`KNOWN_DATASETS`; names are case-insensitive) or any http(s)/file URL. The data
    go to :func:`dataset_dir` under the cache (:func:`cache_dir`: ``root``,
    ``$UNROLLED_CACHE``, ``$XDG_CACHE_HOME/unrolled`` or ``~/.cache/unrolled``). When that
    folder exists and is not empty it is returned at once, with no network access (and no
    checksum: the archive is not kept).

    Otherwise the file is streamed into a temporary file in the cache, its SHA-256 checked
    against ``sha256`` (or the known one; ``None``: unchecked), and on a mismatch deleted
    (``ChecksumError`` quoting both digests). A zip/tar archive is then unpacked by
    :func:`~unrolled.data.archive.safe_extract` (unsafe members refused, nothing left on
    failure) into a temporary folder renamed into place; any other file is stored as is in
    the folder. Network failures raise ``DownloadError`` naming the URL and the folder in
    which to put the files by hand. ``timeout``: seconds per network operation.
    """
    url, known_sha, name = _resolve(name_or_url)
    if sha256 is not None:
        check_instance("sha256", sha256, str, "64 hexadecimal digits")
        if not _SHA256.fullmatch(sha256.lower()):
            raise ValueError(f"sha256: expected 64 hexadecimal digits, got {sha256!r}")
        expected: str | None = sha256.lower()
    else:
        expected = known_sha
    check_real("timeout", timeout, positive=True)  # seconds
    base = cache_dir(root)
    folder = base / name
    if _populated(folder):
        return folder
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} exists and is not a folder; remove it")
    base.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=base)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        got = _fetch(url, tmp, folder, progress, float(timeout))
        if expected is not None and got != expected:
            raise ChecksumError(
                f"SHA-256 mismatch for {url}: expected {expected}, got {got}; the download was "
                "deleted and nothing was extracted"
            )
        try:
            if archive_format(tmp) is not None:
                safe_extract(tmp, folder)
            elif _archive_suffix(urllib.parse.urlsplit(url).path):
                # Most often an HTML error or login page served in place of the archive.
                with open(tmp, "rb") as f:
                    head = f.read(64)
                raise ValueError(
                    f"the file downloaded from {url} is not a zip or tar archive, although its "
                    f"name says so (it starts with {head!r}); nothing was extracted"
                )
            else:
                _store_file(tmp, folder, url)
        except OSError:
            # Another process may have finished the same download first.
            if _populated(folder):
                return folder
            raise
    finally:
        tmp.unlink(missing_ok=True)
    return folder


def _store_file(tmp: Path, folder: Path, url: str) -> None:
    """Move a downloaded non-archive file into ``folder`` atomically (via a staging folder)."""
    filename = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.store-", dir=folder.parent))
    try:
        shutil.move(str(tmp), staging / filename)
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
