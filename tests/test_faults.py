"""Fault tolerance: SIGKILL and resume, SIGINT / SIGTERM, corrupt checkpoints, crashes
during a write, non-finite losses and gradients.

The subprocess tests run the real ``unrolled train`` command (``python -m unrolled``),
one intra-op thread everywhere so that the in-process reference run computes exactly
the same floating-point operations.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import unrolled as ur
from unrolled import cli
from unrolled.train import CheckpointError, CheckpointWarning, load_checkpoint, load_latest
from unrolled.train.checkpoint import PREVIOUS, save_checkpoint

from .test_train import make_trainer, params

SRC = Path(__file__).resolve().parents[1] / "src"
TOTAL_STEPS = 16  # 2 epochs of 8 batches

CONFIG = """
seed = 3
device = "cpu"

[physics]
kernel_sigma = 1.0
noise_sigma = 0.05

[model]
layers = 2
depth = 3
features = 4

[solver]
max_iter = 5
tol = 1e-12

[data]
size = 12
channels = 1
train_images = 16
eval_images = 2

[train]
epochs = 2
batch_size = 2
dtype = "float64"
lr = 0.01
checkpoint_every = {checkpoint_every}
progress = false
plots = false
"""


def write_config(folder: Path, checkpoint_every) -> Path:
    path = folder / f"run-{checkpoint_every}.toml"
    value = json.dumps(checkpoint_every)
    path.write_text(CONFIG.format(checkpoint_every=value))
    return path


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"  # as the in-process run (conftest)
    e["PYTHONWARNINGS"] = "ignore"
    return e


def start(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "unrolled", "train", "--config", str(config), "--out", str(out)]
        + list(extra),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def logged_steps(out: Path) -> int:
    try:
        return len((out / "train_log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def wait_for_steps(proc: subprocess.Popen, out: Path, k: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while logged_steps(out) < k:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {k}: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no step {k} after {timeout} s")
        time.sleep(0.002)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in this process): its final checkpoint."""
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder, 1)
    assert cli.main(["train", "--config", str(config), "--out", str(folder / "run")]) == 0
    state = load_checkpoint(folder / "run" / "latest.pt")
    assert state["step"] == TOTAL_STEPS
    return state


def assert_same_run(state: dict, reference: dict) -> None:
    assert state["step"] == reference["step"]
    assert state["model"].keys() == reference["model"].keys()
    for key, value in reference["model"].items():
        assert torch.equal(state["model"][key], value), key
    losses = [r["loss"] for r in state["history"]["train"]]
    assert losses == [r["loss"] for r in reference["history"]["train"]]


def test_sigkill_at_a_random_point_then_resume_equals_uninterrupted(tmp_path, reference):
    config = write_config(tmp_path, 1)  # a checkpoint every step: the kill may hit a write
    out = tmp_path / "run"
    # Where to kill is drawn from a fixed seed; the step it lands in still depends on
    # timing, and whichever it is, the resumed run must equal the uninterrupted one.
    rng = random.Random(20)
    kill_after, delay = rng.randint(2, TOTAL_STEPS - 4), rng.uniform(0, 0.03)
    proc = start(config, out)
    wait_for_steps(proc, out, kill_after)
    time.sleep(delay)  # somewhere inside a later step, its checkpoint write, ...
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.communicate()
    saved = load_latest(out)[0]["step"]
    assert 1 <= saved < TOTAL_STEPS, (kill_after, delay, saved)

    resumed = start(config, out, "--resume")
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "resuming in" in stdout and str(out.resolve()) in stdout
    assert_same_run(load_checkpoint(out / "latest.pt"), reference)
    rows = [json.loads(r)["step"] for r in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows == list(range(1, TOTAL_STEPS + 1)), (kill_after, delay)
    assert not list(out.glob(".*tmp")), "a temporary file was left behind"


def test_sigterm_and_sigint_write_a_checkpoint_then_exit(tmp_path, reference):
    config = write_config(tmp_path, "epoch")  # no step checkpoints: only the signal's
    runs = {sig: tmp_path / sig.name for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = {sig: start(config, out) for sig, out in runs.items()}
    waiting = dict(procs)
    deadline = time.monotonic() + 120
    while waiting and time.monotonic() < deadline:  # signal each run once it is training
        for sig, proc in list(waiting.items()):
            if logged_steps(runs[sig]) >= 3:
                proc.send_signal(sig)
                del waiting[sig]
            elif proc.poll() is not None:
                raise AssertionError(f"{sig.name} run ended early: {proc.communicate()}")
        time.sleep(0.001)
    for sig, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, (stdout, stderr)
        state = load_checkpoint(runs[sig] / "latest.pt")
        # The signal's checkpoint: every logged step is in it (checkpoint_every="epoch").
        assert 3 <= state["step"] < TOTAL_STEPS
        assert state["step"] == logged_steps(runs[sig])
        assert f"stopped by {sig.name} after step {state['step']}" in stdout
        assert "--resume" in stdout
    # Resuming the SIGTERM run (in this process) ends as the uninterrupted run.
    out = runs[signal.SIGTERM]
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--resume"]) == 0
    assert_same_run(load_checkpoint(out / "latest.pt"), reference)


def test_a_second_sigint_stops_at_once():
    from unrolled.train import StopSignals

    with StopSignals() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert guard.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- corrupt checkpoints, crashes while writing ---------------------------------------------


def test_corrupt_latest_is_reported_and_the_previous_one_used(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.fit()
    part = make_trainer(tmp_path / "part", checkpoint_every=1)
    part.fit(max_steps=5)
    latest, previous = tmp_path / "part" / "latest.pt", tmp_path / "part" / PREVIOUS
    assert load_checkpoint(previous)["step"] == 4
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 3])  # truncated
    resumed = make_trainer(tmp_path / "part")
    with pytest.warns(CheckpointWarning, match=r"latest\.pt.*truncated or corrupt"):
        resumed.fit(resume="latest")
    for key, value in params(full).items():
        assert torch.equal(value, params(resumed)[key]), key


def test_every_checkpoint_corrupt_is_an_error_naming_them(tmp_path, capsys):
    part = make_trainer(tmp_path, checkpoint_every=1, keep_last=2)
    part.fit(max_steps=3)
    files = [tmp_path / "latest.pt", tmp_path / PREVIOUS, *sorted(tmp_path.glob("checkpoint-*"))]
    for path in files:
        path.write_bytes(b"\x00garbage")  # one inode may have several names: all of them
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError) as err:
        make_trainer(tmp_path).fit(resume="latest")
    assert "latest.pt" in str(err.value) and PREVIOUS in str(err.value)
    assert "no usable checkpoint" in str(err.value)


def test_cli_resume_reports_a_corrupt_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path, 1)
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out), "--set", "train.max_steps=3"]
    assert cli.main(args) == 0
    (out / "latest.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(CheckpointWarning, match="latest.pt"):
        assert cli.main(args + ["--resume", "--set", "train.max_steps=4"]) == 0
    state = load_checkpoint(out / "latest.pt")
    assert state["step"] == 4  # resumed from previous.pt (step 2), two more steps
    # A fresh start over an existing run is refused; so is a resume with another config.
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(args + ["--resume", "--set", "train.lr=0.5"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_latest_is_never_overwritten_in_place(tmp_path):
    state = {"model": {"w": torch.ones(3)}, "optimizer": {}, "epoch": 0, "iteration": 1}
    rng = ur.train.rng_state()
    first = save_checkpoint({**state, "step": 1, "rng": rng}, tmp_path, step=1)
    inode = first.stat().st_ino
    save_checkpoint({**state, "step": 2, "rng": rng}, tmp_path, step=2)
    assert (tmp_path / "latest.pt").stat().st_ino != inode  # a new file, renamed over
    assert (tmp_path / PREVIOUS).stat().st_ino == inode  # the old one, untouched
    assert load_checkpoint(tmp_path / PREVIOUS)["step"] == 1
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2


def test_without_hard_links_previous_and_latest_are_copies(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # e.g. a FAT or SMB folder

    monkeypatch.setattr(os, "link", no_links)
    state = {"model": {"w": torch.ones(3)}, "optimizer": {}, "epoch": 0, "iteration": 1}
    rng = ur.train.rng_state()
    for step in (1, 2, 3):
        save_checkpoint({**state, "step": step, "rng": rng}, tmp_path, step=step, keep_last=2)
    numbered = sorted(p.name for p in tmp_path.glob("checkpoint-*.pt"))
    assert numbered == ["checkpoint-000000002.pt", "checkpoint-000000003.pt"]
    assert load_checkpoint(tmp_path / PREVIOUS)["step"] == 2
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 3
    inodes = {(tmp_path / name).stat().st_ino for name in ("latest.pt", PREVIOUS, *numbered)}
    assert len(inodes) == 4  # four files: no name was linked to another
    assert not list(tmp_path.glob(".*tmp"))


def test_a_crash_while_writing_leaves_the_latest_checkpoint_intact(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    before = (tmp_path / "latest.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written ...
        raise OSError("disk full")  # ... and the writer dies

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert (tmp_path / "latest.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 4
    assert not list(tmp_path.glob(".*tmp"))


# -- non-finite losses and gradients --------------------------------------------------------


def nan_at(step_to_break: int, what: str):
    """A loss that is NaN (``what="loss"``), or whose gradient is (``"grad"``), at one call."""
    calls = {"n": 0}

    def loss(x_hat, x):
        calls["n"] += 1
        residual = x_hat - x
        if calls["n"] == step_to_break:
            if what == "loss":
                return residual.square().mean() * float("nan")
            # A finite value whose gradient is made infinite on its way back.
            residual.register_hook(lambda g: g * float("inf"))
        return residual.square().mean()

    return loss


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_nonfinite_raise_keeps_the_last_good_state(tmp_path, what):
    good = make_trainer(epochs=1)
    good.fit(max_steps=2)
    broken = make_trainer(tmp_path, epochs=1, loss=nan_at(3, what))
    with pytest.raises(FloatingPointError, match="non-finite") as err:
        broken.fit()
    assert "step 3" in str(err.value)
    for key, value in params(good).items():
        assert torch.equal(value, params(broken)[key]), key
    state = load_checkpoint(tmp_path / "latest.pt")  # written although checkpoint_every="epoch"
    assert state["step"] == 2
    for key, value in params(good).items():
        assert torch.equal(state["model"][key], value)


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_nonfinite_skip_skips_one_step_and_goes_on(what):
    trainer = make_trainer(epochs=1, loss=nan_at(2, what), nonfinite="skip")
    history = trainer.fit()
    assert [r.get("skipped", 0) for r in history["train"]] == [0, 1, 0, 0]
    for value in params(trainer).values():
        assert torch.isfinite(value).all()
    for group in trainer.optimizer.state.values():  # Adam's moments were not poisoned
        assert all(torch.isfinite(v).all() for v in group.values() if torch.is_tensor(v))
