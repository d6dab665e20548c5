"""Smoke test of the benchmark entry point (tiny sizes, no timing assertions), and checks
of the pieces whose numbers the figures rest on: the gradient error, the paired ratio,
the CG iteration counter of the deepinv reference, and the reference's prox."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from benchmarks import run
from benchmarks.config import BenchConfig, preset
from benchmarks.measure import Lane, paired_ratio, relative_error
from benchmarks.problem import IdentityFidelity, make_batches
from benchmarks.reference import CallStats

TINY = [
    "--sizes", "20", "--batch", "2", "--iters", "1", "--warmup", "1",
    "--layers", "2", "--depth", "3", "--features", "4", "--blur-sigma", "1",
    "--cg-extra-gammas", "--scale-max-iters", "3", "6", "--scale-max-iter-size", "16",
    "--scale-sizes", "12", "--scale-batches", "1", "--scale-iters", "1",
    "--rss-modes", "implicit", "--no-deepinv", "--quiet", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert run.main([*TINY, "--out", str(out)]) == 0
    with open(out / "results.json") as f:
        data = json.load(f)
    data["_out"] = out
    return data


def test_json_has_every_section(results):
    assert set(results["section_seconds"]) == {"main", "rss", "cg", "scaling"}
    machine = results["machine"]
    for key in ("cpu_model", "usable_cores", "torch_version", "torch_threads"):
        assert machine[key] is not None
    assert machine["torch_threads"] == 1
    assert results["config"]["layers"] == 2
    assert results["deepinv"]["version"] is None


def test_main_figures(results):
    main = results["main"]["20"]
    assert list(main["modes"]) == ["denoiser", "unroll", "implicit", "checkpoint"]
    for mode, m in main["modes"].items():
        assert m["time_s"] > 0 and m["forward_s"] > 0 and m["backward_s"] > 0
        assert m["saved_bytes"] > 0 and m["peak_alloc_bytes"] > 0
        assert len(m["steps"]) == 2 and m["steps"][0]["warmup"] and not m["steps"][1]["warmup"]
        if mode == "denoiser":
            assert "grad_rel_error" not in m and m["cg_forward"] is None
        else:
            # float32 CG to its floor against the float64 reference: float32 rounding
            # (~1e-7) amplified by a well-conditioned system (gamma = 1, cond <= 2).
            assert m["grad_rel_error"] < 1e-4
            assert m["cg_forward"] >= 1
    # the float64 reference agrees with autograd through its converged solve
    assert main["reference"]["implicit_vs_unroll_rel_diff"] < 1e-10
    assert main["paired"]["implicit/denoiser"] > 0


def test_rss_and_cg_and_scaling(results):
    rss = results["rss"]["20"]["implicit"]
    assert rss["peak_above_import_bytes"] >= 0 and rss["peak_bytes"] >= rss["baseline_bytes"]
    rows = results["cg"]["rows"]
    assert {r["padding"] for r in rows} == {"valid", "reflect", "replicate", "zeros", "circular"}
    assert {r["preconditioner"] for r in rows} == {
        "none",
        "fourier",
        "boundary",
        "separable",
        "auto",
    }
    circular = {r["preconditioner"]: r for r in rows if r["padding"] == "circular"}
    # the Fourier preconditioner is the exact inverse for circular padding: one step, and
    # at most one more to confirm the floor
    assert circular["fourier"]["forward_iterations"] <= 2
    assert circular["none"]["forward_iterations"] > 2
    # the seed kernel (a Gaussian) is separable: the exact inverse for every padding
    for row in rows:
        if row["preconditioner"] == "separable":
            assert row["forward_iterations"] <= 2, row
    saved = {
        (r["mode"], r["max_iter"]): r["saved_bytes"] for r in results["scaling"]["max_iter"]["rows"]
    }
    # implicit: O(1) in the iterations; unroll: every iterate kept
    assert saved[("implicit", 3)] == saved[("implicit", 6)]
    assert saved[("unroll", 6)] > saved[("unroll", 3)]
    size_rows = results["scaling"]["size"]["rows"]
    batch_rows = results["scaling"]["batch"]["rows"]
    assert {(r["size"], r["batch"], r["mode"]) for r in size_rows} == {
        (12, 2, m) for m in ("denoiser", "implicit", "unroll")
    }
    assert {(r["size"], r["batch"]) for r in batch_rows} == {(20, 1)}
    assert all(r["time_s"] > 0 and r["saved_bytes"] > 0 for r in size_rows + batch_rows)
    assert results["headline"]["implicit_saved_max_iter_ratio"]["ratio"] == 1.0


def test_outputs_written(results):
    out = results["_out"]
    table = (out / "table.md").read_text()
    assert "### 20x20, batch 2" in table and "### CG iterations" in table
    assert sum(line.startswith("| implicit | ") for line in table.splitlines()) == 1
    names = {p.split("/")[-1] for p in results["plots"]}
    assert {"main_20.png", "saved_vs_max_iter.png", "cg_iterations.png"} <= names
    for name in names:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_bad_flags_are_reported(capsys):
    assert run.main(["--sizes", "8", "--no-deepinv", "--quiet"]) == 2
    assert "sizes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="modes"):
        BenchConfig(modes=("fast",))
    with pytest.raises(ValueError, match="preset"):
        preset("slow")


def test_relative_error_and_paired_ratio():
    ref = {"priors.w": torch.tensor([3.0, 0.0], dtype=torch.float64), "scalars.s": torch.ones(1)}
    grads = {"priors.w": torch.tensor([3.0, 4.0], dtype=torch.float64), "scalars.s": torch.ones(1)}
    assert relative_error(grads, ref) == pytest.approx(4 / math.sqrt(10))
    assert relative_error(grads, ref, "scalars.") == 0
    assert math.isnan(relative_error(grads, ref, "nothing."))

    def lane(times):
        steps = [{"round": r, "total": t, "warmup": r == 0} for r, t in enumerate(times)]
        return Lane("m", None, None, None, torch.device("cpu"), steps=steps)

    # round 0 is warm-up; rounds 1..3 give ratios 2, 3, 1: median 2
    assert paired_ratio(lane([9, 2, 3, 1]), lane([1, 1, 1, 1])) == 2


def test_deepinv_call_counter():
    # deepinv's CG applies its system once for the initial residual, once per iteration.
    stats = CallStats(implicit=True)
    stats.forward_solves, stats.forward_calls, stats.calls = 2, 2 * 11, 2 * 11 + 2 * 8
    assert stats.mean_forward == 10 and stats.mean_backward == 7
    assert CallStats(implicit=False).mean_backward == 0


def test_batches_are_seeded_and_shared():
    cfg = BenchConfig(blur_sigma=1.0, sizes=(12,), scale_sizes=(12,), scale_max_iter_size=12)
    a = make_batches(cfg, 12, 2, 2, "cpu", torch.float32)
    b = make_batches(cfg, 12, 2, 2, "cpu", torch.float64)
    assert a[0][1].shape == (2, 3, 6, 6)  # valid blur, 7x7 kernel
    torch.testing.assert_close(b[1][1], a[1][1].double(), rtol=0, atol=0)
    assert not torch.equal(a[0][0], a[1][0])
    z = torch.randn(1, 3, 4, 4)
    assert IdentityFidelity().prox(z, None, None, 1.0) is z


def test_deepinv_prox_matches_ours():
    from benchmarks.reference import DeepinvL2, load_deepinv

    import unrolled as ur

    deepinv, why = load_deepinv()
    if deepinv is None:
        if os.environ.get("UNROLLED_REQUIRE_DEEPINV"):  # CI installs it: never skip there
            pytest.fail(why)
        pytest.skip(why)

    cfg = BenchConfig(blur_sigma=1.0, sizes=(12,), scale_sizes=(12,), scale_max_iter_size=12)
    ((x, y),) = make_batches(cfg, 12, 2, 1, "cpu", torch.float64)
    ours = ur.physics.Blur(ur.physics.gaussian_kernel(1.0, dtype=torch.float64))
    step = DeepinvL2(
        deepinv, ours.kernel, padding="valid", implicit=True, max_iter=200, tol=1e-10, device="cpu"
    )
    z = ours.A_adjoint(y)
    gamma = torch.tensor(2.0, dtype=torch.float64)
    theirs = step.prox(z, y, ours, gamma)
    exact = ur.linalg.prox_l2(ours, z, y, gamma, solver=ur.CG(max_iter=500, tol=1e-13))
    # deepinv's CG adds an absolute 1e-8 to the squared norms it divides by (alpha and
    # beta), which stalls it once ||r||^2 is near 1e-8: about 1e-5 absolute here.
    torch.testing.assert_close(theirs, exact, rtol=0, atol=1e-4)
    # the test separates the step conventions: 1/gamma instead of gamma is far off
    other = ur.linalg.prox_l2(ours, z, y, 1 / gamma, solver=ur.CG(max_iter=500, tol=1e-13))
    assert (other - exact).abs().max() > 1e-2
    assert step.stats.forward_solves == 1 and step.stats.mean_forward >= 1


def test_equal_accuracy_fronts_read_speedups_at_the_references_errors():
    from benchmarks.equal_accuracy import fronts

    def point(mode, error, step, data):
        return {"mode": mode, "grad_rel_error": error, "step_s": step, "data_s": data,
                "max_iter": 100, "tol": error}  # fmt: skip

    points = [
        point("implicit", 1e-6, 2.0, 0.4),
        point("implicit", 1e-3, 1.5, 0.1),
        point("implicit", 1e-4, 3.0, 0.9),  # dominated: slower and less accurate than 1e-6
        point("deepinv-implicit", 1e-5, 4.0, 2.0),
        point("deepinv-implicit", 1e-2, 3.0, 1.0),
        point("deepinv-implicit", 1e-7, 9.0, 7.0),  # more accurate than any of ours
    ]
    result = fronts({"points": {str(i): p for i, p in enumerate(points)}})
    step = {r["error"]: r for r in result["step_s"]["at_deepinv_points"]}
    # at 1e-5 ours needs the 1e-6 setting (2.0 s); at 1e-2 the 1e-3 one (1.5 s)
    assert step[1e-5]["ours"] == 2.0 and step[1e-5]["speedup"] == 2.0
    assert step[1e-2]["ours"] == 1.5 and step[1e-2]["speedup"] == 2.0
    assert 1e-7 not in step  # no setting of ours reaches it: no ratio is claimed
    data = {r["error"]: r["speedup"] for r in result["data_s"]["at_deepinv_points"]}
    assert data == {1e-5: 5.0, 1e-2: 10.0}
    assert result["data_s"]["min_speedup"] == 5.0
