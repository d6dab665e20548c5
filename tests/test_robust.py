"""Runs that survive their users: one writer per run folder, logs that hold every step
once, writes that fail with the file's name and the reason, unconverged solves in plain
sight, and one clear line (exit 2) for every bad input of ``unrolled train``.

The concurrency and start-up tests run the real command in separate processes; the
rest call ``unrolled.cli.main`` in this process (same code path, faster).
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import unrolled as ur
from unrolled import cli
from unrolled.train import CheckpointError, load_checkpoint, load_latest
from unrolled.train.checkpoint import CheckpointMismatch, save_checkpoint
from unrolled.train.convergence import UnconvergedSolves, UnconvergedSolvesWarning
from unrolled.train.files import RunWriteError, writing
from unrolled.train.logs import RunLog
from unrolled.train.runlock import LOCK_NAME, RunLock

from .test_train import make_trainer

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = [
    "--img-size", "16", "--num-images", "8", "--batch-size", "2", "--eval-images", "2",
    "--epochs", "2", "--layers", "2", "--depth", "2", "--features", "4",
    "--set", "train.progress=false", "--set", "train.plots=false",
]  # fmt: skip
STEPS = 8  # 2 epochs of 4 batches


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"
    return e


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "unrolled", "train", *argv]


def steps_in(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def csv_rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1  # without the header


# -- the log bug: every record of a finished run is in its files ----------------------------


def assert_logs_hold(out: Path, history: dict) -> None:
    """Each kind's files hold exactly the run's records, once, in order."""
    for kind in ("train", "eval"):
        steps = [r["step"] for r in history[kind]]
        assert steps, kind
        assert steps_in(out / f"{kind}_log.jsonl") == steps, kind
        assert csv_rows(out / f"{kind}_log.csv") == len(steps), kind


def test_cli_run_and_resume_logs_hold_every_record(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(out), "--max-steps", "3"]) == 0
    assert_logs_hold(out, load_checkpoint(out / "latest.pt")["history"])
    assert steps_in(out / "train_log.jsonl") == [1, 2, 3]
    # A few lines a killed run wrote after its checkpoint: cut back on resume.
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": 0.0}) + "\n")
    assert cli.main(["train", *TINY, "--out", str(out), "--resume"]) == 0
    state = load_checkpoint(out / "latest.pt")
    assert state["step"] == STEPS
    assert_logs_hold(out, state["history"])
    assert steps_in(out / "train_log.jsonl") == list(range(1, STEPS + 1))
    assert steps_in(out / "eval_log.jsonl") == [0, 4, 8]


def test_python_trainer_logs_hold_every_record(tmp_path):
    trainer = make_trainer(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnconvergedSolvesWarning)
        history = trainer.fit()
    assert len(history["train"]) == 8 and len(history["eval"]) == 0
    trainer = make_trainer(tmp_path / "with-eval", eval_data=trainer.train_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnconvergedSolvesWarning)
        history = trainer.fit()
    assert_logs_hold(tmp_path / "with-eval", history)


def test_a_record_of_one_kind_never_rewrites_the_other(tmp_path):
    log = RunLog(tmp_path)
    log.reset({})
    log.append("train", {"step": 1, "loss": 1.0})
    log.append("eval", {"step": 1, "psnr": 20.0})  # the first eval record
    log.append("train", {"step": 2, "loss": 0.5, "skipped": 1})  # a new column
    log.append("eval", {"step": 2, "psnr": 21.0})
    assert steps_in(tmp_path / "train_log.jsonl") == [1, 2]
    assert steps_in(tmp_path / "eval_log.jsonl") == [1, 2]
    header, *rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert header == "step,loss,skipped" and rows == ["1,1.0,", "2,0.5,1"]


# -- one writer per run folder ---------------------------------------------------------------


def test_two_concurrent_resumes_one_proceeds_the_other_exits_2_at_once(tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--num-images", "24", "--out", str(out)]
    assert cli.main(["train", *argv, "--max-steps", "2"]) == 0
    first = subprocess.Popen(
        command(*argv, "--resume"), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(steps_in(out / "train_log.jsonl")) < 3:  # it holds the lock and trains
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Paused mid-run (deterministic: it cannot finish first), it still holds the lock.
    first.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        second = subprocess.run(
            command(*argv, "--resume"), env=env(), capture_output=True, text=True, timeout=120
        )
        waited = time.monotonic() - started
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert second.returncode == 2, second.stderr
    message = second.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert str(out.resolve()) in message and f"process {first.pid}" in message
    assert waited < 60  # at once: it did not wait for the paused run (start-up only)
    steps = steps_in(out / "train_log.jsonl")
    assert steps == list(range(1, 25)), steps  # every step exactly once
    assert steps_in(out / "eval_log.jsonl") == [0, 12, 24]


def test_run_lock_is_reentrant_and_exclusive_across_processes(tmp_path):
    probe = "from unrolled.train.runlock import RunLock; RunLock({!r}).acquire(); print('got it')"
    with RunLock(tmp_path) as lock, RunLock(tmp_path):  # the command, then the trainer
        assert lock.message is None
        assert (tmp_path / LOCK_NAME).read_text().split() == [str(os.getpid())]
        other = subprocess.run(
            [sys.executable, "-c", probe.format(str(tmp_path))], env=env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert other.returncode != 0 and "RunLockedError" in other.stderr
        assert f"process {os.getpid()}" in other.stderr
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly
    with RunLock(tmp_path):
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}\n")  # its holder died without releasing
    with RunLock(tmp_path) as lock:
        assert lock.previous_holder == dead.pid
        assert f"left by process {dead.pid}" in lock.message
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with RunLock(tmp_path) as again:  # released cleanly: nothing to take over
        assert again.message is None


# -- writes that fail cleanly ----------------------------------------------------------------


def test_write_errors_name_the_file_and_the_reason(tmp_path):
    for code, words in ((errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission")):
        with pytest.raises(RunWriteError) as err, writing("checkpoint", tmp_path / "x.pt"):
            raise OSError(code, os.strerror(code))
        assert str(err.value).startswith(f"cannot write checkpoint {tmp_path / 'x.pt'}: ")
        assert words in str(err.value) and err.value.errno == code


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see file names")
def test_disk_full_mid_run_exits_2_keeps_the_last_checkpoint_and_resumes(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(out), "--checkpoint-every", "1"]
    real_fsync, calls = os.fsync, {"n": 0}

    def full_after_a_while(fd):
        # Every atomic write fsyncs its temporary file: three checkpoints (steps 1-3) are
        # written, then the disk is full.
        if ".checkpoint-" in os.readlink(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr("unrolled.train.files.os.fsync", full_after_a_while)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on device" in err[0] and str(out) in err[0]
    assert "checkpoint" in err[0] and "--resume" in err[0]
    monkeypatch.undo()
    assert load_latest(out)[0]["step"] == 3
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    assert cli.main([*argv, "--resume"]) == 0
    assert_logs_hold(out, load_checkpoint(out / "latest.pt")["history"])
    assert steps_in(out / "train_log.jsonl") == list(range(1, STEPS + 1))


def test_a_failed_log_append_leaves_whole_lines(tmp_path, monkeypatch):
    log = RunLog(tmp_path)
    log.reset({})
    log.append("train", {"step": 1, "loss": 1.0})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("unrolled.train.logs.os.write", half_then_full)
    with pytest.raises(RunWriteError, match=r"train_log\.csv: no space left on device"):
        log.append("train", {"step": 2, "loss": 0.5})
    monkeypatch.undo()
    assert steps_in(tmp_path / "train_log.jsonl") == [1]
    assert (tmp_path / "train_log.csv").read_text() == "step,loss\n1,1.0\n"


def _can_mount_tmpfs() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="a real full disk needs root to mount tmpfs")
def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        (disk / "filler").write_bytes(b"\0" * (512 * 1024 - 72 * 1024))  # ~70 kB left
        out = disk / "run"
        argv = [*TINY, "--features", "16", "--out", str(out), "--checkpoint-every", "1"]
        run = subprocess.run(command(*argv), env=env(), capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert "no space left on device" in last and str(out) in last, run.stderr
        assert "warning:" in run.stderr and "free" in run.stderr  # the pre-flight check
        assert load_latest(out)[0]["step"] >= 1  # the last good checkpoint is whole
    finally:
        subprocess.run(["umount", str(disk)])


# -- non-convergence in plain sight ----------------------------------------------------------


def test_trainer_warns_once_per_epoch_with_the_count(tmp_path):
    trainer = make_trainer(tmp_path)  # CG with tol=0: every solve stops at max_iter
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit()
    lines = [str(w.message) for w in caught if w.category is UnconvergedSolvesWarning]
    assert len(lines) == 2  # 2 epochs, 8 steps: once per epoch
    per_epoch = sum(r["cg_unconverged"] for r in history["train"] if r["epoch"] == 0)
    assert per_epoch > 0 and lines[0].startswith(f"epoch 1: {per_epoch} of {per_epoch} CG")
    assert (
        trainer.unconverged.summary()
        == f"{2 * per_epoch} of {2 * per_epoch} CG solves did not converge"
    )


def test_unconverged_solves_counter():
    seen: list[str] = []
    tally = UnconvergedSolves(report=seen.append)
    tally.add([{"epoch": 0, "cg_unconverged": 2, "cg_solves": 8}, {"epoch": 0, "cg_solves": 8}])
    line = tally.end_epoch(0)
    assert seen == [line] and line.startswith("epoch 1: 2 of 16 CG solves stopped at max_iter")
    tally.add({"epoch": 1, "cg_unconverged": 0, "cg_solves": 8})
    assert tally.end_epoch(1) is None and len(seen) == 1
    assert tally.summary() == "2 of 24 CG solves did not converge"
    assert tally.as_dict() == {"cg_unconverged": 2, "cg_solves": 24}
    assert UnconvergedSolves().summary() == "no CG solves"


def test_cli_shows_unconverged_solves_per_epoch_and_raise_stops(tmp_path, capsys):
    argv = ["train", *TINY, "--set", "model.stepsize=1e6"]
    assert cli.main([*argv, "--out", str(tmp_path / "warn")]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "CG solves stopped" in line]
    assert [w.split(":")[2] for w in warned] == [" epoch 1", " epoch 2"]
    assert all(w.startswith("unrolled train: warning: epoch") for w in warned)
    done = next(line for line in captured.out.splitlines() if "done:" in line)
    assert "CG solves did not converge" in done
    assert cli.main([*argv, "--out", str(tmp_path / "quiet"), "--on-failure", "ignore"]) == 0
    assert "CG solves stopped" not in capsys.readouterr().err
    out = tmp_path / "raise"
    assert cli.main([*argv, "--out", str(out), "--on-failure", "raise"]) == 1
    text = capsys.readouterr().out
    assert "stopped:" in text and "max_iter" in text and "--on-failure warn" in text
    assert load_checkpoint(out / "latest.pt")["step"] == 0  # the last good state
    # Converging solves: said in the summary too.
    assert cli.main(["train", *TINY, "--out", str(tmp_path / "ok"), "--max-steps", "1"]) == 0
    assert "all 8 CG solves converged" in capsys.readouterr().out


# -- bad inputs: exit 2 and one line -----------------------------------------------------------


def _png(path: Path, size: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folders(tmp_path):
    """One folder per bad file (next to three good images), and an empty one."""
    made = {}
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    bad = {
        "truncated": buffer.getvalue()[: len(buffer.getvalue()) // 2],
        "zero-byte": b"",
        "text": b"this is a text file\n",
    }
    for name in ("truncated", "zero-byte", "text", "tiny", "empty"):
        folder = tmp_path / name
        folder.mkdir()
        made[name] = folder
        if name == "empty":
            continue
        for i in range(3):
            _png(folder / f"good{i}.png", 24, seed=i)
        if name == "tiny":
            _png(folder / "bad.png", 1)
        else:
            (folder / "bad.png").write_bytes(bad[name])
    return made


IMAGE_MESSAGES = {
    "truncated": "the file is truncated",
    "zero-byte": "the file is empty (0 bytes)",
    "text": "not an image file",
    "tiny": "is 1x1 (HxW), smaller than the crop 16x16",
}


@pytest.mark.parametrize("case", [*IMAGE_MESSAGES, "empty"])
def test_bad_image_folders_exit_2_naming_the_file(case, folders, tmp_path, capsys):
    argv = ["train", *TINY, "--data", "folder", "--data-path", str(folders[case])]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("unrolled train: data.path: ")
    if case == "empty":
        assert "no image files" in err and str(folders[case]) in err
        return
    assert str(folders[case] / "bad.png") in err and IMAGE_MESSAGES[case] in err
    assert "--skip-bad-images" in err
    # Asked to, the run leaves the file out and lists it.
    skip = [*argv, "--skip-bad-images", "--max-steps", "1", "--out", str(tmp_path / "skip")]
    assert cli.main(skip) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable file(s)" in err and str(folders[case] / "bad.png") in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "99999999999999999999999"], "seed: expected an integer in [0, 2**63 - 1]"),
        (["--img-size", "20000"], "data.size=20000"),
        (["--layers", "100000", "--depth", "7", "--features", "32"], "model.layers=100000"),
    ],
    ids=["seed", "img-size", "layers"],
)
def test_out_of_range_values_exit_2_before_anything_is_allocated(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    if "size" in message or "layers" in message:
        assert "needs at least" in err and "of memory on" in err
    assert not out.exists()  # refused before the run folder was made


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run to damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    argv = ["train", *TINY, "--out", str(out), "--set", "train.keep_last=0"]
    assert cli.main(argv) == 0
    return out, argv


def _copy_run(finished, tmp_path) -> tuple[Path, list[str]]:
    source, argv = finished
    out = tmp_path / "run"
    shutil.copytree(source, out)
    (out / "previous.pt").unlink()
    return out, [a if a != str(source) else str(out) for a in argv] + ["--resume"]


def test_flipped_bytes_are_damage_not_code(finished, tmp_path, capsys):
    out, argv = _copy_run(finished, tmp_path)
    data = bytearray((out / "latest.pt").read_bytes())
    rng = random.Random(0)
    for _ in range(5):
        data[rng.randrange(len(data))] ^= 0xFF
    (out / "latest.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(out / "latest.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "arbitrary code" not in err


@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_checkpoints_that_do_not_fit_name_the_tensor(fault, finished, tmp_path, capsys):
    out, argv = _copy_run(finished, tmp_path)
    state = load_checkpoint(out / "latest.pt")
    name = next(k for k in state["model"] if k.endswith("weight"))
    shape = tuple(state["model"][name].shape)
    if fault == "nan":
        state["model"][name].view(-1)[3] = float("nan")
    else:
        state["model"][name] = torch.zeros(5, *shape[1:])
    (out / "latest.pt").unlink()
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, out,
                    step=state["step"])  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"tensor {name!r}" in err
    if fault == "nan":
        assert "1 NaN or infinite value(s)" in err
    else:
        assert f"shape {(5, *shape[1:])}" in err and f"shape {shape}" in err


def test_a_checkpoint_of_another_seed_is_a_mismatch(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnconvergedSolvesWarning)
        trainer.fit()
    with pytest.raises(CheckpointMismatch, match="seed"):
        make_trainer(tmp_path, seed=1).fit(resume="latest")


def test_nonfinite_inputs_name_the_callers_argument():
    physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    torch.manual_seed(0)
    model = ur.unfolded.HQS(layers=2, denoiser=ur.models.DnCNN(1, 1, depth=2, features=4))
    y = physics.A(torch.rand(1, 1, 16, 16))
    bad = y.clone()
    bad[0, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^y: expected finite values"):
        model(bad, physics)
    with pytest.raises(ValueError, match=r"^x0: expected finite values"):
        model(y, physics, x0=torch.full((1, 1, 16, 16), float("inf")))
    # Finite inputs, a diverging iteration: said as such, not as a bad argument.
    wild = ur.unfolded.HQS(layers=3, denoiser=_Explode(), trainable=False)
    with pytest.raises(FloatingPointError, match="before layer 2 of 3"):
        wild(y, physics)


class _Explode(torch.nn.Module):
    def forward(self, x, sigma):
        return x * float("inf")


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (CI runners, `cmd &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give
    # the child the disposition an interactive user's process has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until_loading_torch(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    # The signal must land while the command is importing its libraries, whatever the
    # machine's speed: wait until torch's shared library is mapped into the child.
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not maps.exists() or "libtorch" in maps.read_text():
            return
        time.sleep(0.005)
    raise AssertionError("the command never started loading torch")


def test_sigint_during_start_up_is_one_line(tmp_path):
    proc = subprocess.Popen(
        command(*TINY, "--out", str(tmp_path / "run")), env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )  # fmt: skip
    _wait_until_loading_torch(proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (130, -signal.SIGINT), (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert "stopped by SIGINT" in stdout + stderr
