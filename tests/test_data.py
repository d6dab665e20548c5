"""Tests of unrolled.data: datasets, safe archive extraction, downloads (loopback server only)."""

from __future__ import annotations

import hashlib
import http.server
import io
import math
import socket
import stat
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from unrolled.data import (
    SAMPLE_SPLITS,
    ChecksumError,
    DeadLeaves,
    DownloadError,
    ImageFolder,
    SampleImages,
    UnsafeArchiveError,
    cache_dir,
    dataset_dir,
    download_dataset,
    paint_discs,
    power_law_radii,
    safe_extract,
)

# --------------------------------------------------------------------------- DeadLeaves


def test_dead_leaves_shape_dtype_range():
    for channels in (1, 3):
        ds = DeadLeaves((40, 56), channels=channels, length=3)
        x = ds[0]
        assert x.shape == (channels, 40, 56)
        assert x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert len(DeadLeaves(8, length=7)) == 7


def test_dead_leaves_is_a_pure_function_of_seed_and_index():
    a, b = DeadLeaves(48, length=10, seed=3), DeadLeaves(48, length=10, seed=3)
    later = a[7]
    _ = a[2], a[5]  # other items drawn in between change nothing
    assert torch.equal(later, a[7])
    assert torch.equal(later, b[7])
    assert torch.equal(a[-1], a[9])
    assert not torch.equal(a[7], a[6])
    assert not torch.equal(a[7], DeadLeaves(48, length=10, seed=4)[7])


def test_dead_leaves_are_piecewise_constant_with_many_regions():
    x = DeadLeaves(64, channels=3, seed=1)[0]
    colours = torch.unique(x.reshape(3, -1).T, dim=0)
    # ~2000 discs land on the image; dozens must stay visible, not one flat colour.
    assert colours.shape[0] >= 30
    # Occluding discs: most neighbouring pixels share a disc (equal colour), but edges exist.
    same_h = (x[:, :, 1:] == x[:, :, :-1]).all(dim=0).float().mean()
    same_v = (x[:, 1:, :] == x[:, :-1, :]).all(dim=0).float().mean()
    assert 0.5 < float(same_h) < 0.98 and 0.5 < float(same_v) < 0.98
    grey = DeadLeaves(64, channels=1, seed=1)[0]
    assert torch.unique(grey).numel() >= 30


def test_dead_leaves_max_discs_leaves_background():
    # One disc at most, then one background colour: at most two colours in the image.
    x = DeadLeaves(32, max_discs=1)[0]
    assert torch.unique(x.reshape(3, -1).T, dim=0).shape[0] <= 2


def _naive_paint(size, radii, centres, colours, background):
    """Back-to-front painter, one disc at a time (the last disc painted is the front one)."""
    h, w = size
    img = np.tile(np.asarray(background, dtype=np.float32)[:, None, None], (1, h, w))
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    for k in reversed(range(len(radii))):
        inside = (yy - centres[k][0]) ** 2 + (xx - centres[k][1]) ** 2 <= radii[k] ** 2
        img[:, inside] = np.asarray(colours[k])[:, None]
    return img


def test_paint_discs_matches_a_naive_back_to_front_painter():
    g = torch.Generator().manual_seed(0)
    n, size = 60, (23, 31)
    radii = power_law_radii(n, 0.7, 12.0, g)
    centres = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40 - 5  # some off-image
    colours = torch.rand(n, 2, generator=g)
    background = torch.tensor([0.25, 0.75])
    got = paint_discs(size, radii, centres, colours, background)
    want = _naive_paint(size, radii.numpy(), centres.numpy(), colours.numpy(), background)
    assert got.shape == (2, *size)
    np.testing.assert_array_equal(got.numpy(), want)
    empty = paint_discs(4, torch.zeros(0), torch.zeros(0, 2), torch.zeros(0, 2), background)
    assert torch.equal(empty, background[:, None, None].expand(2, 4, 4))


def test_power_law_radii_follow_r_minus_3():
    rmin, rmax, n = 1.5, 40.0, 20000
    r = power_law_radii(n, rmin, rmax, torch.Generator().manual_seed(1)).numpy()
    assert rmin <= r.min() and r.max() <= rmax
    r.sort()
    cdf = (rmin**-2 - r**-2) / (rmin**-2 - rmax**-2)  # CDF of c r^-3 on [rmin, rmax]
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1 % level


def _ks2(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return np.abs(fa - fb).max()


def test_dead_leaves_discs_are_those_of_the_full_process_that_reach_the_image():
    # Reference: the plain process (p(r) ~ r^-3, centres uniform on the image grown by rmax),
    # keeping the discs centred within r of the image's bounding box.
    ds = DeadLeaves((20, 30), rmin=1.0, rmax=10.0)
    g = torch.Generator().manual_seed(2)
    n = 40000
    r = power_law_radii(n, 1.0, 10.0, g)
    cy = torch.rand(n, generator=g, dtype=torch.float64) * 40 - 10
    cx = torch.rand(n, generator=g, dtype=torch.float64) * 50 - 10
    keep = (cy >= -r) & (cy <= 20 + r) & (cx >= -r) & (cx <= 30 + r)
    ref = (r[keep], cy[keep], cx[keep])
    got = ds._discs(n, torch.Generator().manual_seed(3))
    m, k = ref[0].numel(), got[0].numel()
    # Same acceptance rate (binomial, 4 standard deviations) and same laws (KS at 1 %).
    assert abs(k - m) < 4 * math.sqrt(2 * n * (m / n) * (1 - m / n))
    for a, b in zip(got, ref, strict=True):
        assert _ks2(a.numpy(), b.numpy()) < 1.63 * math.sqrt((m + k) / (m * k))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"size": 0}, ValueError, "size"),
        ({"size": (4, 5, 6)}, ValueError, "size"),
        ({"size": 8.0}, TypeError, "size"),
        ({"size": 8, "channels": 0}, ValueError, "channels"),
        ({"size": 8, "channels": True}, TypeError, "channels"),
        ({"size": 8, "length": 0}, ValueError, "length"),
        ({"size": 8, "length": 10.0}, TypeError, "length"),
        ({"size": 8, "seed": -1}, ValueError, "seed"),
        ({"size": 8, "rmin": 0.0}, ValueError, "rmin"),
        ({"size": 8, "rmin": "1"}, TypeError, "rmin"),
        ({"size": 8, "rmin": 3.0, "rmax": 2.0}, ValueError, "rmax"),
        ({"size": 8, "max_discs": 0}, ValueError, "max_discs"),
        ({"size": 8, "max_discs": False}, TypeError, "max_discs"),
    ],
)
def test_dead_leaves_rejects_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=f"^{name}: expected ") as raised:
        DeadLeaves(**kwargs)
    assert type(raised.value) is error


def test_dead_leaves_edge_cases():
    assert DeadLeaves(1)[0].shape == (3, 1, 1)  # default rmax grows to rmin on tiny images
    same = DeadLeaves(16, rmin=2.5, rmax=2.5, channels=2)[0]  # one radius only
    assert same.shape == (2, 16, 16) and torch.unique(same[0]).numel() >= 10
    ds = DeadLeaves(8, length=4)
    assert torch.equal(ds[np.int64(2)], ds[2]) and torch.equal(ds[torch.tensor(2)], ds[2])


def test_dead_leaves_index_errors():
    ds = DeadLeaves(8, length=2)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    with pytest.raises(TypeError, match="index"):
        ds[0.5]


def test_dataloader_batches_dead_leaves():
    ds = DeadLeaves(16, length=16)
    batches = list(DataLoader(ds, batch_size=8))
    assert len(batches) == 2
    assert batches[0].shape == (8, 3, 16, 16) and batches[0].dtype == torch.float32
    # Items depend on (seed, index) only, so worker processes produce the very same batches.
    in_workers = list(DataLoader(ds, batch_size=8, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(batches, in_workers, strict=True))


# --------------------------------------------------------------------------- ImageFolder


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def image_dir(tmp_path):
    """A folder tree with one image per supported format, plus files that are not images."""
    root = tmp_path / "images"
    (root / "sub" / "deeper").mkdir(parents=True)
    arrays = {
        "a.png": _rgb(20, 24, 0),
        "sub/b.BMP": _rgb(18, 22, 1),
        "sub/deeper/c.tif": _rgb(16, 20, 2),
        "sub/d.JPG": _rgb(30, 30, 3),
    }
    for name, a in arrays.items():
        Image.fromarray(a).save(root / name)
    grey = np.random.default_rng(4).integers(0, 256, (17, 19), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(root / "e_grey.png")
    rgba = np.random.default_rng(5).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "f_rgba.png")
    deep = np.random.default_rng(6).integers(0, 65536, (16, 18), dtype=np.uint16)
    Image.fromarray(deep).save(root / "g_16bit.png")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "deeper" / "h.jpeg.txt").write_text("not an image either")
    return root, arrays, grey, rgba, deep


def test_image_folder_finds_sorted_files_and_decodes_exactly(image_dir):
    root, arrays, grey, rgba, deep = image_dir
    ds = ImageFolder(root)
    rel = [p.relative_to(root).as_posix() for p in ds.files]
    assert rel == sorted(rel)
    assert set(rel) == set(arrays) | {"e_grey.png", "f_rgba.png", "g_16bit.png"}
    item = {r: ds[i] for i, r in enumerate(rel)}
    for name in ("a.png", "sub/b.BMP", "sub/deeper/c.tif"):  # lossless formats
        want = torch.from_numpy(arrays[name]).permute(2, 0, 1).float() / 255
        assert torch.equal(item[name], want)
    jpeg = torch.from_numpy(arrays["sub/d.JPG"]).permute(2, 0, 1).float() / 255
    assert item["sub/d.JPG"].shape == jpeg.shape  # lossy: shape only
    assert torch.equal(item["e_grey.png"], (torch.from_numpy(grey).float() / 255).expand(3, -1, -1))
    want_rgba = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float() / 255
    assert torch.equal(item["f_rgba.png"], want_rgba)  # alpha dropped, colour untouched
    want_deep = torch.from_numpy(deep.astype(np.float64) / 65535).float()
    torch.testing.assert_close(item["g_16bit.png"][0], want_deep, rtol=0, atol=1e-7)
    for x in item.values():
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1


def test_image_folder_grey_uses_luma(image_dir):
    root, arrays, *_ = image_dir
    ds = ImageFolder(root, channels=1)
    x = ds[[p.name for p in ds.files].index("a.png")]
    a = arrays["a.png"].astype(np.float64)
    luma = (a[..., 0] * 299 + a[..., 1] * 587 + a[..., 2] * 114) / 1000  # ITU-R 601-2
    assert x.shape == (1, 20, 24)
    # Pillow rounds the luma to 8 bits: at most half a grey level off.
    np.testing.assert_allclose(x[0].numpy() * 255, luma, atol=0.5 + 1e-4)


def _window_offset(full, crop):
    """The (top, left) at which ``crop`` sits in ``full``, or None."""
    h, w = crop.shape[-2:]
    corner = full[..., : full.shape[-2] - h + 1, : full.shape[-1] - w + 1]
    # Only positions whose top-left pixel matches can hold the window.
    for top, left in (corner == crop[..., :1, :1]).all(dim=0).nonzero().tolist():
        if torch.equal(full[..., top : top + h, left : left + w], crop):
            return top, left
    return None


def test_image_folder_random_crops_are_windows_reproducible_and_change_with_epoch(image_dir):
    root, *_ = image_dir
    full = ImageFolder(root)
    ds = ImageFolder(root, crop=(8, 10), seed=5)
    epoch0 = [ds[i] for i in range(len(ds))]
    for i, x in enumerate(epoch0):
        assert x.shape == (3, 8, 10)
        assert _window_offset(full[i], x) is not None
    again = ImageFolder(root, crop=(8, 10), seed=5)
    assert all(torch.equal(a, again[i]) for i, a in enumerate(epoch0))
    ds.set_epoch(1)
    epoch1 = [ds[i] for i in range(len(ds))]
    # Each image has >= 7x11 offsets; 7 images all repeating their crop has odds < 1e-10.
    assert sum(not torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True)) >= 4
    other_seed = ImageFolder(root, crop=(8, 10), seed=6)
    assert any(not torch.equal(a, other_seed[i]) for i, a in enumerate(epoch0))
    ds.set_epoch(0)
    assert all(torch.equal(a, ds[i]) for i, a in enumerate(epoch0))
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_image_folder_centre_crops_when_not_training(image_dir):
    root, arrays, *_ = image_dir
    ds = ImageFolder(root, crop=(8, 10), train=False)
    i = [p.name for p in ds.files].index("a.png")
    want = torch.from_numpy(arrays["a.png"][6:14, 7:17]).permute(2, 0, 1).float() / 255
    assert torch.equal(ds[i], want)
    ds.set_epoch(3)
    assert torch.equal(ds[i], want)


def test_image_folder_crop_larger_than_image_names_file_and_sizes(image_dir):
    root, *_ = image_dir
    ds = ImageFolder(root, crop=(19, 10))
    i = [p.name for p in ds.files].index("c.tif")
    with pytest.raises(ValueError, match=r"c\.tif.*16x20.*19x10"):
        ds[i]


def test_image_folder_unreadable_files(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    Image.fromarray(_rgb(8, 8, 0)).save(root / "good.png")
    (root / "garbage.png").write_bytes(b"this is not a png at all")
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64, 1)).save(buf, format="PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    ds = ImageFolder(root)
    assert len(ds) == 3  # lazy by default: found, not yet read
    names = [p.name for p in ds.files]
    for bad in ("garbage.png", "truncated.png"):
        with pytest.raises(OSError, match=bad):
            ds[names.index(bad)]
    with pytest.warns(UserWarning, match=r"(?s)2 unreadable.*garbage\.png.*truncated\.png"):
        skipping = ImageFolder(root, skip_unreadable=True)
    assert [p.name for p in skipping.files] == ["good.png"]
    assert skipping[0].shape == (3, 8, 8)


def test_image_folder_missing_or_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no image files.*empty"):
        ImageFolder(empty)
    with pytest.raises(NotADirectoryError, match="readme"):
        ImageFolder(empty / "readme.txt")


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"crop": 0}, ValueError, "crop"),
        ({"crop": "8"}, TypeError, "crop"),
        ({"crop": (8, 8, 8)}, ValueError, "crop"),  # a tuple of the wrong length: a value
        ({"crop": True}, TypeError, "crop"),
        ({"channels": 2}, ValueError, "channels"),
        ({"channels": 3.0}, TypeError, "channels"),
        ({"seed": -3}, ValueError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
    ],
)
def test_image_folder_rejects_bad_arguments(image_dir, kwargs, error, name):
    with pytest.raises(error, match=f"^{name}: expected ") as raised:
        ImageFolder(image_dir[0], **kwargs)
    assert type(raised.value) is error


def test_dataloader_batches_image_folder_crops(image_dir):
    ds = ImageFolder(image_dir[0], crop=12)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch.shape == (4, 3, 12, 12) and batch.dtype == torch.float32


# --------------------------------------------------------------------------- SampleImages


def test_sample_image_splits_are_fixed_and_disjoint():
    assert not set(SAMPLE_SPLITS["train"]) & set(SAMPLE_SPLITS["eval"])
    assert SAMPLE_SPLITS["all"] == SAMPLE_SPLITS["train"] + SAMPLE_SPLITS["eval"]
    assert SampleImages("eval").names == ("astronaut", "chelsea", "coffee")
    assert len(SampleImages("train")) == len(SAMPLE_SPLITS["train"])


def test_sample_images_match_scikit_image_loaders():
    skdata = pytest.importorskip("skimage.data")
    ev = SampleImages("eval")
    x = ev[0]
    assert x.shape == (3, 512, 512) and x.dtype == torch.float32
    want = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).float() / 255
    assert torch.equal(x, want)
    tr = SampleImages("train", channels=3)
    cam = tr[tr.names.index("camera")]
    assert torch.equal(cam, (torch.from_numpy(skdata.camera()).float() / 255).expand(3, -1, -1))
    grey = SampleImages("eval", channels=1)[1]
    assert grey.shape == (1, 300, 451)


def test_sample_images_crops():
    ev = SampleImages("eval", crop=64)
    full = SampleImages("eval")
    assert torch.equal(ev[2], full[2][:, 168:232, 268:332])  # coffee is 400x600: centre crop
    tr = SampleImages("train", crop=32, length=20, seed=1)
    assert len(tr) == 20
    n = len(tr.names)
    first = [tr[i] for i in range(20)]
    fulls = SampleImages("train")
    for i in (0, 3, n, n + 3):  # items i and i + n crop the same image
        assert _window_offset(fulls[i % n], first[i]) is not None
    assert not torch.equal(first[0], first[n])  # two crops of one image in one epoch
    tr.set_epoch(1)
    assert sum(not torch.equal(a, tr[i]) for i, a in enumerate(first)) >= 15
    batch = next(iter(DataLoader(tr, batch_size=8)))
    assert batch.shape == (8, 3, 32, 32)
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1


def test_sample_images_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SampleImages("test")
    with pytest.raises(ValueError, match="length"):
        SampleImages("train", length=30)  # no crop: more items than images is meaningless
    with pytest.raises(ValueError, match="length"):
        SampleImages("eval", crop=16, length=30)  # centre crops would repeat
    with pytest.raises(ValueError, match="crop"):
        SampleImages("eval", crop=(301, 16))[1]  # chelsea is 300 high


def test_sample_images_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        SampleImages("train")


# --------------------------------------------------------------------------- safe_extract


def _tar(path: Path, members, mode="w:gz"):
    """Write a tar archive; members: (name, kind, payload) with kind file/dir/sym/hard/chr."""
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return path


def _zip(path: Path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload in members:
            if kind == "sym":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, payload)
            else:
                zf.writestr(name, payload)
    return path


GOOD = [
    ("data", "dir", None),
    ("data/a.txt", "file", b"alpha"),
    ("data/sub/b.txt", "file", b"beta"),
]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_safe_extract_good_archives(tmp_path):
    tgz = _tar(
        tmp_path / "good.tar.gz",
        [*GOOD, ("data/link", "sym", "sub/b.txt"), ("data/hard", "hard", "data/a.txt")],
    )
    out = safe_extract(tgz, tmp_path / "out_tar")
    assert (out / "data/a.txt").read_bytes() == b"alpha"
    assert (out / "data/link").is_symlink() and (out / "data/link").read_bytes() == b"beta"
    assert (out / "data/hard").read_bytes() == b"alpha"
    zpath = _zip(tmp_path / "good.zip", [m for m in GOOD if m[1] == "file"])
    out = safe_extract(zpath, tmp_path / "out_zip")
    assert (out / "data/sub/b.txt").read_bytes() == b"beta"
    assert _leftovers(tmp_path) == sorted(["good.tar.gz", "good.zip", "out_tar", "out_zip"])


EVIL_TAR = {
    "dotdot": [("data/../../evil.txt", "file", b"x")],
    "absolute": [("/tmp/unrolled-evil.txt", "file", b"x")],
    "symlink_out": [("data/link", "sym", "../../outside")],
    "symlink_abs": [("data/link", "sym", "/etc/passwd")],
    # Lexically inside, but 'a' is the target root itself, so a/.. is its parent.
    "symlink_chain": [("a", "sym", "."), ("b", "sym", "a/..")],
    "write_through_symlink": [("up", "sym", ".."), ("up/evil.txt", "file", b"x")],
    "hardlink_out": [("data/hard", "hard", "../evil.txt")],
    "device": [("data/tty", "chr", None)],
}


@pytest.mark.parametrize("case", sorted(EVIL_TAR))
def test_safe_extract_refuses_unsafe_tar_members(tmp_path, case):
    (tmp_path / "in").mkdir()
    archive = _tar(tmp_path / "in" / "evil.tar.gz", [*GOOD, *EVIL_TAR[case]])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match=r"evil\.tar\.gz.*refused"):
        safe_extract(archive, work / "target")
    assert _leftovers(work) == []  # nothing extracted, no staging folder left
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/unrolled-evil.txt").exists()


@pytest.mark.parametrize(
    "member",
    [
        ("../evil.txt", "file", b"x"),
        ("data/../../evil.txt", "file", b"x"),
        ("/abs/evil.txt", "file", b"x"),
        ("C:/evil.txt", "file", b"x"),
        ("data/link", "sym", "../../outside"),
    ],
)
def test_safe_extract_refuses_unsafe_zip_members(tmp_path, member):
    archive = _zip(tmp_path / "evil.zip", [*[m for m in GOOD if m[1] == "file"], member])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(archive, work / "target")
    assert _leftovers(work) == []
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="archive_path"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "t")
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a zip or tar"):
        safe_extract(tmp_path / "plain.txt", tmp_path / "t")
    archive = _zip(tmp_path / "ok.zip", [("a.txt", "file", b"a")])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("already here")
    with pytest.raises(FileExistsError, match="target_dir"):
        safe_extract(archive, busy)
    (tmp_path / "emptydir").mkdir()
    assert (safe_extract(archive, tmp_path / "emptydir") / "a.txt").read_bytes() == b"a"


# --------------------------------------------------------------------------- download_dataset


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server over tmp_path/'served'; yields (base URL, folder, request log)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": log})

    def make(*args, **kwargs):
        return handler(*args, directory=str(served), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["tar.gz", "tgz", "zip"])
def test_download_verifies_extracts_and_then_stays_offline(server, tmp_path, kind):
    base, served, log = server
    files = [m for m in GOOD if m[1] == "file"]
    archive = (
        _zip(served / "set.zip", files) if kind == "zip" else _tar(served / f"set.{kind}", GOOD)
    )
    cache = tmp_path / "cache"
    url = f"{base}/{archive.name}"
    sha = _sha(archive).upper()  # digests are compared case-insensitively
    folder = download_dataset(url, root=cache, sha256=sha, progress=kind == "zip")
    assert folder == dataset_dir(url, cache) and folder.parent == cache
    assert folder.name.startswith("set-")
    assert (folder / "data/a.txt").read_bytes() == b"alpha"
    assert (folder / "data/sub/b.txt").read_bytes() == b"beta"
    assert log == [f"/{archive.name}"]
    assert _leftovers(cache) == [folder.name]  # no temporary file or folder left
    archive.unlink()  # the second call must not even ask
    assert download_dataset(url, root=cache, progress=False) == folder
    assert log == [f"/{archive.name}"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, served, log = server
    archive = _tar(served / "set.tar.gz", GOOD)
    wrong = hashlib.sha256(b"something else").hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        download_dataset(f"{base}/set.tar.gz", root=cache, sha256=wrong, progress=False)
    assert wrong in str(info.value) and _sha(archive) in str(info.value)
    assert _leftovers(cache) == []
    assert len(log) == 1


def test_download_refuses_unsafe_archive(server, tmp_path):
    base, served, _ = server
    _tar(served / "evil.tar.gz", [*GOOD, ("../evil.txt", "file", b"x")])
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match="refused"):
        download_dataset(f"{base}/evil.tar.gz", root=cache, progress=False)
    assert _leftovers(cache) == []
    assert not (tmp_path / "evil.txt").exists()


def test_download_non_archive_and_fake_archive(server, tmp_path):
    base, served, _ = server
    (served / "weights.bin").write_bytes(b"\x00\x01\x02")
    (served / "page.zip").write_text("<html>please log in</html>")
    cache = tmp_path / "cache"
    folder = download_dataset(f"{base}/weights.bin", root=cache, progress=False)
    assert (folder / "weights.bin").read_bytes() == b"\x00\x01\x02"
    with pytest.raises(ValueError, match="not a zip or tar archive.*html"):
        download_dataset(f"{base}/page.zip", root=cache, progress=False)
    assert _leftovers(cache) == [folder.name]


def test_download_http_error_and_unreachable_host(server, tmp_path):
    base, _, _ = server
    cache = tmp_path / "cache"
    url = f"{base}/missing.tar.gz"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_dataset(url, root=cache, progress=False)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.tar.gz"
    with pytest.raises(DownloadError) as info:
        download_dataset(url, root=cache, progress=False, timeout=5)
    message = str(info.value)
    assert url in message and str(dataset_dir(url, cache)) in message
    assert "by hand" in message and "extract its contents into" in message
    assert _leftovers(cache) == []


def test_known_names_resolve_and_use_present_data_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be used")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    for name, folder in [("BSD500", "BSDS500"), ("bsds500", "BSDS500"), ("CBSD68", "CBSD68")]:
        assert dataset_dir(name, tmp_path) == tmp_path / folder
    (tmp_path / "BSDS500").mkdir()
    (tmp_path / "BSDS500" / "placed_by_hand.txt").write_text("x")
    assert download_dataset("BSD500", root=tmp_path) == tmp_path / "BSDS500"


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UNROLLED_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "unrolled"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "unrolled"
    monkeypatch.setenv("UNROLLED_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir(tmp_path / "root") == tmp_path / "root"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name_or_url": "ImageNet"}, ValueError, "name_or_url.*BSDS500"),
        ({"name_or_url": "ftp://example.invalid/x.zip"}, ValueError, "scheme 'ftp'"),
        ({"name_or_url": "CBSD68", "sha256": "abc"}, ValueError, "sha256"),
        ({"name_or_url": "CBSD68", "timeout": 0}, ValueError, "^timeout: expected"),
        ({"name_or_url": "CBSD68", "timeout": True}, TypeError, "^timeout: expected"),
        ({"name_or_url": "CBSD68", "sha256": 64}, TypeError, "^sha256: expected"),
        ({"name_or_url": 3}, TypeError, "^name_or_url: expected"),
    ],
)
def test_download_rejects_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        download_dataset(root=tmp_path, progress=False, **kwargs)
    assert _leftovers(tmp_path) == []
