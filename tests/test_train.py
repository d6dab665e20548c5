"""The trainer: exact resume, seeded measurements, logs, checkpoints, metrics, plots."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import unrolled as ur
from unrolled.train import (
    CheckpointError,
    Timer,
    Trainer,
    TrainerSettings,
    derive_seed,
    load_checkpoint,
    median,
    mse,
    numbered_checkpoints,
    plot_losses,
    plot_reconstructions,
    psnr,
    rng_state,
    save_checkpoint,
    seeded_noise,
    set_rng_state,
)

DTYPE = torch.float64


class TinyUnfolded(nn.Module):
    """A two-conv refinement of ``A^T y`` followed by one L2 prox with a trainable step."""

    def __init__(self, backward: str = "implicit", max_iter: int = 4, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(4, 1, 3, padding=1),
        )
        self.log_gamma = nn.Parameter(torch.tensor(0.0))
        solver = ur.CG(max_iter=max_iter, tol=0, stop_at_floor=False, on_failure="ignore")
        self.fidelity = ur.L2(solver=solver, backward=backward)

    def forward(self, y, physics):
        x0 = physics.A_adjoint(y)
        z = x0 + self.net(x0)
        return self.fidelity.prox(z, y, physics, self.log_gamma.exp())


class AdjointModel(nn.Module):
    """Returns ``A^T y``: its PSNR is the baseline's."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, y, physics):
        return self.scale * physics.A_adjoint(y)


def smooth_images(n: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g, dtype=DTYPE)
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def make_physics(generator=0, sigma=0.05):
    kernel = ur.physics.gaussian_kernel(1.0, dtype=DTYPE)
    noise = ur.physics.GaussianNoise(sigma, generator=generator)
    return ur.physics.Blur(kernel, padding="valid", noise=noise)


def make_trainer(tmp_path=None, *, loader="make_loader", generator=0, seed=0, **kwargs):
    torch.manual_seed(1234)  # model initialisation, identical for every run
    model = TinyUnfolded().to(DTYPE)
    images = smooth_images(8)
    if loader == "make_loader":
        data = Trainer.make_loader(TensorDataset(images), batch_size=2)
    elif loader == "dataloader":
        data = DataLoader(images, batch_size=2, shuffle=True)
    else:  # a plain list of (x, label) tuples
        data = [(images[i : i + 2], i) for i in range(0, 8, 2)]
    options = dict(epochs=2, seed=seed, progress=False, tensorboard=False, plots=False)
    options.update(kwargs)
    return Trainer(model, make_physics(generator), data, out_dir=tmp_path, **options)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}


# -- exact resume ---------------------------------------------------------------------------


class Kill(Exception):
    pass


def kill_after(k):
    def callback(trainer, record):
        if record["step"] == k:
            raise Kill

    return callback


@pytest.mark.parametrize(
    "loader, generator, kill_at",
    [("make_loader", 0, 5), ("dataloader", None, 5), ("list", 0, 5), ("make_loader", 0, 4)],
    ids=[
        "make_loader+seeded-noise",
        "own-dataloader+global-noise",
        "list+seeded-noise",
        "killed-at-epoch-end",
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, loader, generator, kill_at):
    evals = [smooth_images(2, seed=5)]  # evaluating between epochs must not perturb the run
    full = make_trainer(tmp_path / "full", loader=loader, generator=generator, eval_data=evals)
    history = full.fit()
    assert len(history["train"]) == 8

    killed = make_trainer(
        tmp_path / "run",
        loader=loader,
        generator=generator,
        eval_data=evals,
        checkpoint_every=2,
        callbacks=[kill_after(kill_at)],
    )
    with pytest.raises(Kill):
        killed.fit()
    # The process dies here; something else (dropout, user code) moves the global RNG.
    torch.rand(17)
    random.random()
    resumed = make_trainer(tmp_path / "run", loader=loader, generator=generator, eval_data=evals)
    resumed.fit(resume="latest")

    a, b = params(full), params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in resumed.history["train"]] == [r["loss"] for r in history["train"]]
    # The log holds each step once, though the killed run wrote step 5 before dying.
    lines = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))
    csv_lines = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 8
    assert resumed.history["eval"] == history["eval"]
    eval_lines = (tmp_path / "run" / "eval_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in eval_lines] == [0, 1, 2]


def test_resume_equality_is_not_vacuous(tmp_path):
    # A different seed (noise, order, dropout) must end elsewhere.
    a = make_trainer(seed=0)
    a.fit()
    b = make_trainer(seed=1)
    b.fit()
    assert not torch.equal(params(a)["net.0.weight"], params(b)["net.0.weight"])


def test_max_steps_then_resume_from_path(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.fit()
    part = make_trainer(tmp_path / "part")
    part.fit(max_steps=3)
    assert part.step == 3 and part.epoch == 0 and part.iteration == 3
    state = torch.load(tmp_path / "part" / "latest.pt", weights_only=True)
    assert state["step"] == 3
    again = make_trainer(tmp_path / "part")
    again.fit(resume=tmp_path / "part" / "latest.pt")
    for key, value in params(full).items():
        assert torch.equal(value, params(again)[key]), key


def test_resume_checks_seed_and_auto_starts_fresh(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    assert trainer.resolve_resume("auto") is None
    trainer.fit(resume="auto")
    other = make_trainer(tmp_path, seed=3)
    with pytest.raises(ValueError, match="seed"):
        other.fit(resume="latest")
    with pytest.raises(FileNotFoundError, match="latest"):
        make_trainer(tmp_path / "empty").fit(resume="latest")
    with pytest.raises(ValueError, match="out_dir"):
        make_trainer(None).fit(resume="latest")


# -- measurements and evaluation ------------------------------------------------------------


@pytest.mark.parametrize("generator", [0, None], ids=["own-generator", "global-rng"])
def test_seeded_noise_depends_on_seed_only_and_keeps_global_rng(generator):
    physics = make_physics(generator)
    x = smooth_images(2)
    with seeded_noise(physics, 11):
        y1 = physics(x)
    physics(x)  # move any generator on
    torch.manual_seed(5)
    with seeded_noise(physics, 11):
        y2 = physics(x)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # the global stream is untouched
    with seeded_noise(physics, 12):
        y3 = physics(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


def test_derive_seed():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert derive_seed(0, 1, 2) != derive_seed(0, 1, 3)
    assert 0 <= derive_seed(5) < 2**63
    with pytest.raises(ValueError, match="seed"):
        derive_seed(-1)


def test_evaluate_uses_fixed_noise_and_matches_baseline():
    images = smooth_images(4)
    trainer = Trainer(
        AdjointModel().to(DTYPE),
        make_physics(0),
        [images],
        eval_data=[images[:2], images[2:]],
        progress=False,
        tensorboard=False,
    )
    torch.manual_seed(9)
    first = trainer.evaluate()
    after = torch.rand(2)
    torch.manual_seed(9)
    assert torch.equal(after, torch.rand(2))  # evaluation left the global RNG alone
    with seeded_noise(trainer.physics, 99):
        trainer.physics(images)  # training would move the noise generator
    second = trainer.evaluate()
    assert first == second
    assert first["n"] == 4
    # Independent: the same seeds by hand, for the model and for the best baseline.
    (best,) = [b for b in trainer.baselines if b.label == first["baseline"]]
    scores, baseline_scores = [], []
    for b, x in enumerate([images[:2], images[2:]]):
        with seeded_noise(trainer.physics, trainer.eval_seed(b)):
            y = trainer.physics(x)
        scores.append(psnr(trainer.physics.A_adjoint(y), x))
        baseline_scores.append(psnr(best(trainer.physics, y), x))
    assert first["psnr"] == pytest.approx(float(torch.cat(scores).mean()), rel=1e-12)
    assert first["psnr_baseline"] == pytest.approx(
        float(torch.cat(baseline_scores).mean()), rel=1e-12
    )
    # the best of the fitted baselines, each scored once
    assert first["psnr_baseline"] == max(s["psnr"] for s in trainer.baseline_scores.values())
    assert len(trainer.baseline_scores) == 3


# -- override points and statistics sources -------------------------------------------------


class MeasurementConsistent(Trainer):
    """A loss on the measurement, ``mean |A x_hat - y|^2``, by overriding compute_loss."""

    def compute_loss(self, x_hat, x, y, physics):
        self.seen = (y.clone(), physics)
        return mse(physics.A(x_hat), y)


def test_compute_loss_override_gets_the_measurement_and_the_physics():
    images = smooth_images(2)
    trainer = MeasurementConsistent(
        AdjointModel().to(DTYPE),
        make_physics(0),
        [images],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),  # the model stays as it is
        baselines=None,
        progress=False,
        tensorboard=False,
    )
    (record,) = trainer.fit()["train"]
    y, physics = trainer.seen
    assert physics is trainer.physics
    assert torch.equal(y, trainer.measure(images, 0, 0))  # the step's seeded measurement
    x_hat = physics.A_adjoint(y)  # AdjointModel with scale 1
    expected = float((physics.A(x_hat) - y).square().mean())
    assert record["loss"] == pytest.approx(expected, rel=1e-12)
    # and not the default image loss
    assert abs(record["loss"] - float((x_hat - images).square().mean())) > 1e-3


class Clamped(Trainer):
    """Estimates clamped to [0.2, 0.6], by overriding model_inference."""

    def model_inference(self, y, physics, *, training=True):
        self.modes.add(training)
        return super().model_inference(y, physics, training=training).clamp(0.2, 0.6)


def test_model_inference_override_is_used_for_steps_and_evaluations():
    images = smooth_images(4)
    physics = make_physics(0)
    trainer = Clamped(
        AdjointModel().to(DTYPE),
        physics,
        [images[:2]],
        eval_data=[images],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
        baselines=None,
        progress=False,
        tensorboard=False,
    )
    trainer.modes = set()
    history = trainer.fit()
    assert trainer.modes == {True, False}
    with seeded_noise(physics, trainer.eval_seed(0)):
        y = physics(images)
    clamped = float(psnr(physics.A_adjoint(y).clamp(0.2, 0.6), images).mean())
    assert history["eval"][-1]["psnr"] == pytest.approx(clamped, rel=1e-12)
    assert abs(clamped - float(psnr(physics.A_adjoint(y), images).mean())) > 0.1  # dB


class CountingAdjoint(AdjointModel):
    """Reports per-step statistics: its calls (a count) and the mean of |y| (a pair)."""

    def __init__(self):
        super().__init__()
        self.reset_statistics()

    def reset_statistics(self):
        self.calls, self.total, self.entries = 0, 0.0, 0

    def statistics(self):
        return {"calls": self.calls, "mean_abs_y": (self.total, self.entries)}

    def forward(self, y, physics):
        self.calls += 1
        self.total += float(y.abs().sum())
        self.entries += y.numel()
        return super().forward(y, physics)


def test_statistics_sources_report_per_step_columns():
    images = smooth_images(4)
    trainer = Trainer(
        CountingAdjoint().to(DTYPE),
        make_physics(0),
        [images[:2], images[2:]],
        baselines=None,
        progress=False,
        tensorboard=False,
    )
    history = trainer.fit()["train"]
    for (epoch, iteration), record, x in zip(
        [(0, 0), (0, 1)], history, [images[:2], images[2:]], strict=True
    ):
        assert record["calls"] == 1 and isinstance(record["calls"], int)  # reset every step
        y = trainer.measure(x, epoch, iteration)
        assert record["mean_abs_y"] == pytest.approx(float(y.abs().mean()), rel=1e-12)
        assert "cg_forward" not in record  # no fidelity, no CG columns
    plain = Trainer(AdjointModel().to(DTYPE), make_physics(0), [images], progress=False)
    assert set(plain.fit()["train"][0]) == {
        "step",
        "epoch",
        "iteration",
        "loss",
        "time_s",
        "lr",
        "data_time_s",
    }


def test_training_improves_eval_psnr_and_writes_outputs(tmp_path):
    trainer = make_trainer(
        tmp_path,
        epochs=3,
        eval_data=[smooth_images(4, seed=7)],
        plots=True,
        lr=1e-2,
    )
    history = trainer.fit()
    evals = history["eval"]
    assert [e["epoch"] for e in evals] == [0, 1, 2, 3]
    assert evals[-1]["psnr"] > evals[0]["psnr"]
    for name in ("loss.png", "reconstructions.png"):
        with Image.open(tmp_path / name) as img:
            img.verify()
    eval_rows = (tmp_path / "eval_log.jsonl").read_text().splitlines()
    assert len(eval_rows) == 4


def test_records_cg_iterations_time_and_memory(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, measure_memory=True)
    history = trainer.fit()
    for r in history["train"]:
        # CG(max_iter=4, tol=0) runs exactly 4 iterations forward and 4 in the implicit
        # backward, once per step.
        assert r["cg_forward"] == 4.0
        assert r["cg_backward"] == 4.0
        # Both samples stop at max_iter (by design), in the forward and the backward solve.
        assert r["cg_unconverged"] == 4
        assert r["time_s"] > 0 and r["data_time_s"] >= 0
        assert r["peak_bytes"] > 0 and r["saved_peak_bytes"] > 0
        assert r["lr"] == 1e-3
    header = (tmp_path / "train_log.csv").read_text().splitlines()[0].split(",")
    every_third = make_trainer(epochs=2, measure_memory=3).fit()["train"]
    assert [r["step"] for r in every_third if "peak_bytes" in r] == [1, 4, 7]
    for column in ("step", "loss", "time_s", "cg_forward", "cg_backward", "peak_bytes"):
        assert column in header


def test_unroll_has_no_backward_solve():
    trainer = make_trainer(epochs=1)
    trainer.module.fidelity.backward = "unroll"
    history = trainer.fit()
    assert all(r["cg_backward"] == 0.0 for r in history["train"])


def test_nonfinite_loss_policies():
    def nan_loss(x_hat, x):
        return (x_hat - x).square().mean() * float("nan")

    trainer = make_trainer(epochs=1, loss=nan_loss)
    before = params(trainer)
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.fit()
    for key, value in before.items():
        assert torch.equal(value, params(trainer)[key])
    skipping = make_trainer(epochs=1, loss=nan_loss, nonfinite="skip")
    history = skipping.fit()
    assert all(r["skipped"] == 1 for r in history["train"])
    for key, value in before.items():
        assert torch.equal(value, params(skipping)[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(seed=-1), "seed"),
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(log_every=0), "log_every"),
        (dict(nonfinite="ignore"), "nonfinite"),
        (dict(tensorboard="yes"), "tensorboard"),
        (dict(lr=-1.0), "lr"),
        (dict(grad_clip=0), "grad_clip"),
        (dict(keep_last=-1), "keep_last"),
        (dict(eval_every=0), "eval_every"),
        (dict(max_steps=-1), "max_steps"),
        (dict(max_val=0.0), "max_val"),
        (dict(measure_memory=-1), "measure_memory"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=f"^{match}: expected"):
        make_trainer(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=1.5), "epochs"),
        (dict(handle_signals="yes"), "handle_signals"),
        (dict(nonfinite=None), "nonfinite"),
        (dict(lr="fast"), "lr"),
    ],
)
def test_settings_of_the_wrong_type_are_named(kwargs, match):
    with pytest.raises(TypeError, match=f"^{match}: expected"):
        make_trainer(**kwargs)


def test_an_unknown_keyword_is_named_with_the_accepted_ones():
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'.*epochs"):
        make_trainer(epoch=2)


def test_settings_are_checked_once_and_read_as_attributes(tmp_path):
    trainer = make_trainer(str(tmp_path), measure_memory=True, max_val=1, seed=4)
    settings = trainer.settings
    assert settings.out_dir == tmp_path and isinstance(settings.out_dir, Path)
    assert settings.measure_memory == 1 and settings.max_val == 1.0
    assert trainer.seed == 4 and trainer.out_dir == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 5
    with pytest.raises(AttributeError, match="no_such_setting"):
        trainer.no_such_setting  # noqa: B018
    assert TrainerSettings(epochs=3, device="cpu").device == torch.device("cpu")


def test_trainer_example_runs():
    import unrolled.train.trainer as module

    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 8
    assert results.failed == 0


def test_bad_batches_and_models_are_named():
    with pytest.raises(TypeError, match="model"):
        Trainer(lambda y, p: y, make_physics(), [smooth_images(2)])
    trainer = Trainer(
        TinyUnfolded().to(DTYPE),
        make_physics(),
        [{"x": smooth_images(2)}],
        progress=False,
        tensorboard=False,
    )
    with pytest.raises(TypeError, match="train_data"):
        trainer.fit()


def test_optimizer_factory_and_scheduler():
    trainer = make_trainer(
        epochs=1,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    history = trainer.fit()
    assert [r["lr"] for r in history["train"]] == [0.05, 0.025, 0.0125, 0.00625]
    with pytest.raises(TypeError, match="optimizer"):
        make_trainer(optimizer=lambda p: "not an optimizer")


# -- tensorboard (optional) -----------------------------------------------------------------


def test_tensorboard_is_optional(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    trainer = make_trainer(tmp_path, epochs=1, tensorboard="auto")
    trainer.fit()
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ImportError, match="tensorboard"):
        make_trainer(tmp_path / "b", epochs=1, tensorboard=True).fit()


def test_tensorboard_scalars_when_available(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, global_step):
            written.append((tag, value, global_step))

        def close(self):
            written.append("closed")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    trainer = make_trainer(tmp_path, epochs=1, tensorboard="auto")
    trainer.fit()
    losses = [(v, s) for t, v, s in written[:-1] if t == "train/loss"]
    assert losses == [(r["loss"], r["step"]) for r in trainer.history["train"]]
    assert written[-1] == "closed"


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002 - the legacy global state is what is saved
    state = {
        "model": {"w": torch.randn(3)},
        "optimizer": {},
        "epoch": 1,
        "iteration": 2,
        "step": 7,
        "rng": rng_state(),
        "history": {"train": [{"loss": 0.5}], "eval": []},
    }
    path = save_checkpoint(state, tmp_path, step=7)
    expected = (torch.rand(4), random.random(), np.random.rand())  # noqa: NPY002
    raw = torch.load(path, weights_only=True)  # loads with the safe unpickler as such
    loaded = load_checkpoint(path)
    assert raw["step"] == loaded["step"] == 7
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected[0])
    assert random.random() == expected[1]
    assert np.random.rand() == expected[2]  # noqa: NPY002
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary left


def test_corrupt_checkpoints_are_named(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    path = tmp_path / "latest.pt"
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_needing_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "unrolled.train.checkpoint", "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out  # refused before running
    plain = tmp_path / "plain.pt"
    torch.save({"something": 1}, plain)
    with pytest.raises(CheckpointError, match="not an unrolled"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_keep_last_numbered_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, checkpoint_every=1, keep_last=3)
    trainer.fit()
    names = [p.name for p in numbered_checkpoints(tmp_path)]
    assert names == [f"checkpoint-{s:09d}.pt" for s in (6, 7, 8)]
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 8
    assert not list(tmp_path.glob(".*tmp"))


# -- metrics, timers, plots -----------------------------------------------------------------


def test_psnr_closed_form():
    x = torch.zeros(3, 1, 4, 4, dtype=DTYPE)
    c = torch.tensor([0.1, 0.01, 0.5], dtype=DTYPE)
    x_hat = x + c[:, None, None, None]
    assert torch.allclose(psnr(x_hat, x), -20 * torch.log10(c), rtol=0, atol=1e-12)
    assert torch.allclose(psnr(x_hat, x, max_val=2.0), 20 * torch.log10(2 / c), atol=1e-12)
    assert psnr(x, x).isinf().all()
    # Complex: compared by magnitude, so a phase change costs nothing.
    phase = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    z = torch.polar(torch.ones(2, 1, 3, 3, dtype=DTYPE), phase)
    assert psnr(z * 1j, z).isinf().all()
    assert psnr(z, z).dtype == DTYPE
    with pytest.raises(ValueError, match="x_hat"):
        psnr(x[:2], x)
    with pytest.raises(ValueError, match="max_val"):
        psnr(x, x, max_val=0.0)


def test_mse_complex_and_real():
    a = torch.tensor([[1.0 + 1.0j, 0.0]])
    assert float(mse(a, torch.zeros_like(a))) == pytest.approx(1.0)  # (|1+i|^2 + 0) / 2
    assert float(mse(torch.ones(2, 2), torch.zeros(2, 2))) == 1.0


def test_timer_and_median():
    with Timer() as t:
        sum(range(1000))
    assert 0 < t.seconds < 5
    assert median([3.0, 100.0, 1.0, 2.0], skip_first=1) == 2.0
    assert math.isnan(median([]))
    with pytest.raises(ValueError, match="skip_first"):
        median([1.0], skip_first=-1)


def _png_size(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_plot_losses(tmp_path):
    path = plot_losses(
        {"unroll": [1.0, 0.5, 0.25], "implicit": [1.0, 0.6, 0.2]}, tmp_path / "loss.png"
    )
    assert _png_size(path)[0] > 100
    # Non-positive values: linear axis instead of failing.
    plot_losses({"a": [1.0, 0.0, -1.0]}, tmp_path / "lin.png")
    with pytest.raises(ValueError, match="histories"):
        plot_losses({}, tmp_path / "none.png")


def test_plot_reconstructions_valid_padding_complex_and_rgb(tmp_path):
    x = smooth_images(3, size=12)
    physics = make_physics()
    y = physics(x)
    assert y.shape[-1] < x.shape[-1]  # valid padding: the measurement is smaller
    grey = plot_reconstructions(y, physics.A_adjoint(y), x, tmp_path / "grey.png", n=2)
    w, h = _png_size(grey)
    assert w > h  # 3 columns, 2 rows
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 8, 8, generator=g)
    plot_reconstructions(None, rgb, rgb, tmp_path / "rgb.png")
    z = torch.polar(torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g))
    plot_reconstructions(z, z, z, tmp_path / "complex.png")
    with pytest.raises(ValueError, match="x_hat"):
        plot_reconstructions(y, x[:, :, :4], x, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="n"):
        plot_reconstructions(y, x, x, tmp_path / "bad.png", n=0)
