"""Safe loading: checkpoints that would run code are refused; archives that would write
outside their folder are refused (fuzzed member names on top of test_data's cases)."""

from __future__ import annotations

import io
import pathlib
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unrolled import cli
from unrolled.data import UnsafeArchiveError, safe_extract
from unrolled.train import CheckpointError, load_checkpoint

from .test_train import make_trainer


class Payload:
    """Unpickling this would call ``Path.touch(marker)``: harmless, but visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like an unrolled checkpoint and carries the payload."""
    state = make_trainer(epochs=1).state_dict()
    state.update(format="unrolled.train.checkpoint", version=1, extra=Payload(marker))
    torch.save(state, path)
    return path


def test_the_payload_is_real(tmp_path):
    # The unsafe loader runs it: the refusal tested below is not vacuous.
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_everywhere(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused.*arbitrary code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        make_trainer().fit(resume=path)
    # As the run folder's latest.pt, through the command and its fallback search.
    run = tmp_path / "run"
    run.mkdir()
    malicious_checkpoint(run / "latest.pt", marker)
    with pytest.warns(UserWarning, match="refused"):
        assert cli.main(["train", "--out", str(run), "--resume"]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err  # errors go to stderr
    assert not marker.exists()


def test_zip_bomb_of_pickle_opcodes_and_foreign_files_are_refused(tmp_path):
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(b"cos\nsystem\n(S'touch /tmp/never'\ntR.")  # a classic pickle exploit
    with pytest.raises(CheckpointError, match="raw.pkl"):
        load_checkpoint(raw)
    assert not Path("/tmp/never").exists()
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt.*truncated or corrupt"):
        load_checkpoint(empty)
    folder = tmp_path / "dir.pt"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="dir.pt"):
        load_checkpoint(folder)


# -- archives: what test_data.py does not cover -------------------------------------------


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = b"x"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, target
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return path


UNSAFE_TAR = {
    "backslash_dotdot": [("data\\..\\..\\evil.txt", "file", None)],
    "drive_letter": [("C:\\evil.txt", "file", None)],
    "hardlink_absolute": [("data/h", "hard", "/etc/passwd")],
    "hardlink_through_symlink": [("d", "sym", ".."), ("h", "hard", "d/evil.txt")],
    "symlink_dir_then_file": [("d", "sym", "/tmp"), ("d/evil.txt", "file", None)],
    "deep_dotdot": [("a/b/c/../../../../evil.txt", "file", None)],
    "fifo": [("pipe", "fifo", None)],
    "symlink_loop_escape": [("a", "sym", "b"), ("b", "sym", "a/../..")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TAR))
def test_more_unsafe_tar_members_are_refused(tmp_path, case):
    archive = _tar(tmp_path / "evil.tar", UNSAFE_TAR[case])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(archive, work / "target")
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


PARTS = st.sampled_from(["a", "b", "..", ".", "", "/", "c.txt"])


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the fuzz writes repeated zip names
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.lists(PARTS, min_size=1, max_size=5), min_size=1, max_size=3),
    link=st.one_of(st.none(), st.lists(PARTS, min_size=1, max_size=4)),
    fmt=st.sampled_from(["tar", "zip"]),
)
def test_fuzzed_member_names_never_escape(tmp_path_factory, names, link, fmt):
    """Any member names (and one symlink in tar): either refused before anything is
    written, or extracted with every file inside the target."""
    root = tmp_path_factory.mktemp("fuzz")
    sandbox = root / "sandbox"
    sandbox.mkdir()
    members = [("/".join(p) if "/" not in p else "".join(p), "file", None) for p in names]
    members = [(n, k, t) for n, k, t in members if n.strip("/.") != ""]
    if not members:
        return
    archive = root / f"in.{fmt}"
    if fmt == "tar":
        if link is not None:
            members.insert(0, ("lnk", "sym", "/".join(link)))
        _tar(archive, members)
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for name, _, _ in members:
                zf.writestr(name, b"x")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    target = sandbox / "target"
    try:
        safe_extract(archive, target)
    except UnsafeArchiveError as err:
        assert "refused" in str(err)
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
        return
    except (FileExistsError, IsADirectoryError, NotADirectoryError, tarfile.TarError) as err:
        # Conflicting members (a file and a folder of the same name): an ordinary error.
        assert str(err)
        return
    outside = [
        p for p in root.rglob("*") if target not in p.parents and p != target
        and p.relative_to(root) not in before
    ]  # fmt: skip
    assert outside == [], outside
    for p in target.rglob("*"):
        assert p.resolve().is_relative_to(target.resolve()) or p.is_symlink()
        if p.is_symlink():
            assert p.resolve().is_relative_to(target.resolve()), p
