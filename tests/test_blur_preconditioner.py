"""The boundary-weighted preconditioner of blur CG solves: SPD, exact solves and
gradients against dense float64 references, and CG's ``"auto"`` choice."""

import re
from pathlib import Path

import pytest
import torch

from unrolled.linalg import CG, prox_l2, prox_l2_with_info
from unrolled.physics import PADDINGS, Blur, gaussian_kernel
from unrolled.testing import dense_matrix, dense_prox, prox_gradients
from unrolled.testing import relative_error as rel

F64 = torch.float64
BOUNDARY = CG(tol=1e-12, max_iter=2000, preconditioner=lambda o, g: o.boundary_preconditioner(g))


def _operator(padding, sigma=1.2, size=None):
    return Blur(gaussian_kernel(sigma, size, dtype=F64), padding=padding)


def _dense_preconditioner(op, gamma, shape):
    n = shape[-2] * shape[-1]
    eye = torch.eye(n, dtype=F64).reshape(n, 1, *shape[-2:])
    return op.boundary_preconditioner(torch.tensor(gamma, dtype=F64))(eye).reshape(n, n).T


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("gamma", [0.3, 100.0])
def test_boundary_preconditioner_is_symmetric_positive_definite(padding, gamma):
    # A non-square image and an asymmetric kernel, so no symmetry hides a transpose error.
    op = Blur(torch.rand(5, 4, dtype=F64, generator=torch.Generator().manual_seed(0)), padding)
    m = _dense_preconditioner(op, gamma, (9, 11))
    assert (m - m.T).abs().max() <= 1e-12 * m.abs().max()
    assert torch.linalg.eigvalsh(m).min() > 0


@pytest.mark.parametrize("padding", PADDINGS)
def test_coverage_is_the_normalised_diagonal_of_the_normal_operator(padding):
    op = _operator(padding, size=(5, 3))
    a = dense_matrix(op, (1, 1, 10, 8), F64)
    diag = (a * a).sum(0).reshape(10, 8)
    coverage = op.coverage((10, 8), dtype=F64)[0, 0]
    squared = (op.kernel**2).sum()
    if padding in ("valid", "zeros", "circular"):  # no output reads a pixel twice: exact
        assert torch.allclose(coverage, (diag / squared).clamp(max=1), atol=1e-14)
    else:  # sum of squares: at most the diagonal (the cross terms are >= 0 here)
        assert (coverage * squared <= diag + 1e-14).all()
    assert coverage.max() == 1 and coverage.min() >= 0
    if padding == "valid":  # a corner pixel is read by one output through one tap
        assert coverage[0, 0] == pytest.approx(float(op.kernel[0, 0] ** 2 / squared))


@pytest.mark.parametrize("padding", PADDINGS)
def test_boundary_preconditioned_prox_and_gradients_match_dense(padding):
    g = torch.Generator().manual_seed(1)
    k = gaussian_kernel(1.5, 5, dtype=F64).requires_grad_()
    z = torch.randn(2, 2, 12, 10, dtype=F64, generator=g).requires_grad_()
    x = torch.rand(2, 2, 12, 10, dtype=F64, generator=g)
    y = Blur(k.detach(), padding).A(x).requires_grad_()
    gamma = torch.tensor([3.0, 100.0], dtype=F64, requires_grad=True)
    v = torch.randn(z.shape, dtype=F64, generator=g)

    def ours(z, y, gamma):
        op = Blur(k, padding)
        h, info = prox_l2_with_info(op, z, y, gamma, solver=BOUNDARY)
        assert info.forward.all_converged
        return h

    h, grads = prox_gradients(ours, [z, y, gamma, k], v)
    truth, truth_grads = prox_gradients(
        lambda z, y, g: dense_prox(Blur(k, padding), z, y, g), [z, y, gamma, k], v
    )
    # cond(A^T A + I/gamma) <= 1 + 100 ||k||_1^2 = 101: tol 1e-12 leaves ~1e-10
    assert rel(h, truth) < 1e-9
    for a, b in zip(grads, truth_grads, strict=True):
        assert rel(a, b) < 1e-8


def test_boundary_preconditioner_halves_valid_iterations_when_stiff():
    # The seed blur (sigma 2.5, 17x17) with "valid" padding at gamma = 100 on the first
    # layer's system (z = A^T y): a deterministic iteration count, not a time. (37 plain
    # against 13 when written.)
    g = torch.Generator().manual_seed(2)
    op = _operator("valid", sigma=2.5)
    y = op.A(torch.rand(1, 1, 64, 64, dtype=F64, generator=g))
    z = op.A_adjoint(y)
    gamma = torch.tensor(100.0, dtype=F64)
    solver = CG(tol=1e-6, max_iter=500, preconditioner=None)
    _, plain = prox_l2_with_info(op, z, y, gamma, solver=solver)
    _, pre = prox_l2_with_info(
        op,
        z,
        y,
        gamma,
        solver=CG(tol=1e-6, max_iter=500, preconditioner=BOUNDARY.preconditioner),
    )
    assert 2 * int(pre.forward.iterations) <= int(plain.forward.iterations)


def test_boundary_preconditioner_declines_pixelwise_gamma():
    op = _operator("valid")
    assert op.boundary_preconditioner(torch.full((1, 1, 8, 8), 2.0, dtype=F64)) is None


def _recorded_auto_choices(column: str):
    """``{padding: picks}`` from a column of the CG table in docs/performance.md."""
    text = (Path(__file__).parents[1] / "docs" / "performance.md").read_text()
    section = text.split("### CG iterations to the float floor")[1].split("###")[0]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    index = [c.strip() for c in header.strip("|").split("|")].index(column)
    picks = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        picks.setdefault(cells[0], set()).add(cells[index])
    return picks


@pytest.mark.parametrize("padding", PADDINGS)
def test_auto_picks_the_preconditioner_recorded_in_the_docs(padding):
    # The table's problem blurs by a Gaussian (separable): its "auto picks" column
    recorded = _recorded_auto_choices("auto picks")[padding]
    assert recorded == {"fourier" if padding == "circular" else "separable"}
    # ... and the choice for other kernels, made from its other columns
    recorded = _recorded_auto_choices("auto picks, kernel not separable")[padding]
    assert recorded == {Blur.AUTO_PRECONDITIONER.get(padding, "none")}
    rough = torch.rand(5, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    op = Blur(rough, padding=padding)
    gamma = torch.tensor(10.0, dtype=F64)
    auto = op.preconditioner(gamma)
    r = torch.randn(2, 1, 12, 12, dtype=F64, generator=torch.Generator().manual_seed(3))
    if recorded == {"none"}:
        assert auto is None
    else:
        chosen = getattr(op, f"{next(iter(recorded))}_preconditioner")(gamma)
        assert torch.equal(auto(r), chosen(r))


def test_recorded_table_supports_the_auto_choice():
    # The docs table's own numbers: where auto picks a preconditioner, it needs fewer
    # forward iterations than none at every gamma >= 10 (a check on the record, not a time).
    text = (Path(__file__).parents[1] / "docs" / "performance.md").read_text()
    section = text.split("### CG iterations to the float floor")[1].split("###")[0]
    header, _, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    names = [c.strip() for c in header.strip("|").split("|")]
    for row in rows:
        cells = dict(zip(names, (c.strip() for c in row.strip("|").split("|")), strict=False))
        gamma = float(re.match(r"[\d.]+", cells["gamma"]).group())
        for column in ("auto picks", "auto picks, kernel not separable"):
            pick = cells[column]
            if pick == "none" or gamma < 10:
                continue
            assert int(cells[pick].split("/")[0]) < int(cells["none"].split("/")[0]), row


@pytest.mark.parametrize("padding", ["valid", "circular"])
@pytest.mark.parametrize("grad", [False, True])
def test_fused_normal_equals_adjoint_of_forward(padding, grad):
    g = torch.Generator().manual_seed(6)
    op = Blur(torch.rand(5, 6, dtype=F64, generator=g), padding, fft=True)
    x = torch.randn(2, 3, 11, 13, dtype=F64, generator=g)
    with torch.set_grad_enabled(grad):
        assert rel(op.normal(x), op.A_adjoint(op.A(x))) < 1e-13


def test_cached_spectrum_follows_the_kernel():
    # An in-place update (an optimiser step) and a new kernel tensor both invalidate it.
    g = torch.Generator().manual_seed(7)
    k = torch.rand(5, 5, dtype=F64, generator=g)
    op = Blur(k.clone(), "valid", fft=True)
    x = torch.randn(1, 1, 12, 12, dtype=F64, generator=g)
    with torch.no_grad():
        op.normal(x)
        op.kernel.mul_(2.0)
        assert rel(op.normal(x), Blur(2 * k, "valid", fft=False).normal(x)) < 1e-13
        op.kernel = 3 * k
        assert rel(op.A(x), Blur(3 * k, "valid", fft=False).A(x)) < 1e-13


def test_kept_boundary_weights_follow_the_kernel():
    # The boundary preconditioner's weights are kept between solves like the spectra:
    # an in-place update and a new kernel tensor both rebuild them.
    g = torch.Generator().manual_seed(11)
    k = torch.rand(5, 5, dtype=F64, generator=g)
    k[0, 0] = 0.0
    op = Blur(k.clone(), "valid")
    r = torch.randn(1, 1, 9, 9, dtype=F64, generator=g)
    gamma = torch.tensor(3.0, dtype=F64)
    with torch.no_grad():
        op.boundary_preconditioner(gamma)(r)  # keeps the weights for this grid
        op.kernel[0, 0] = 1.0  # another coverage: the corner pixel is now seen
        fresh = Blur(op.kernel.clone(), "valid").boundary_preconditioner(gamma)(r)
        assert rel(op.boundary_preconditioner(gamma)(r), fresh) < 1e-14
        op.kernel = k.clone()
        fresh = Blur(k.clone(), "valid").boundary_preconditioner(gamma)(r)
        assert rel(op.boundary_preconditioner(gamma)(r), fresh) < 1e-14


def test_trainable_kernel_gets_its_gradient_through_the_cached_path():
    g = torch.Generator().manual_seed(8)
    k = torch.rand(4, 4, dtype=F64, generator=g, requires_grad=True)
    op = Blur(k, "valid", fft=True)
    x = torch.randn(1, 1, 10, 10, dtype=F64, generator=g)
    with torch.no_grad():
        op.normal(x)  # fills the cache
    (grad,) = torch.autograd.grad(op.normal(x).square().sum(), k)
    truth = Blur(k, "valid", fft=False)
    (expected,) = torch.autograd.grad(truth.A_adjoint(truth.A(x)).square().sum(), k)
    assert rel(grad, expected) < 1e-12


@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_boundary_preconditioner_with_per_sample_kernels_and_complex_images(dtype):
    g = torch.Generator().manual_seed(9)
    k = torch.rand(2, 3, 5, 4, dtype=F64, generator=g)
    k = k / k.sum((-2, -1), keepdim=True)
    op = Blur(k, "valid")
    z = torch.randn(2, 3, 10, 9, dtype=dtype, generator=g)
    y = op.A(torch.randn(2, 3, 10, 9, dtype=dtype, generator=g))
    gamma = torch.tensor([2.0, 50.0], dtype=F64)
    h, info = prox_l2_with_info(op, z, y, gamma, solver=BOUNDARY)
    assert info.forward.all_converged
    assert rel(h, dense_prox(op, z, y, gamma)) < 1e-9


def test_unroll_through_the_boundary_preconditioner_with_unseen_pixels():
    # A kernel with zero corner taps leaves the image corners unseen by a "valid" blur
    # (coverage 0): the unrolled gradient through the preconditioner stays finite and
    # equals the dense closed form (the solve converges, so unroll = exact derivative).
    g = torch.Generator().manual_seed(10)
    k = torch.rand(3, 3, dtype=F64, generator=g)
    k[0, 0] = k[2, 2] = 0.0
    k.requires_grad_()
    z = torch.randn(1, 1, 8, 8, dtype=F64, generator=g, requires_grad=True)
    y = Blur(k.detach(), "valid").A(torch.rand(1, 1, 8, 8, dtype=F64, generator=g))
    y.requires_grad_()
    gamma = torch.tensor(20.0, dtype=F64, requires_grad=True)
    v = torch.randn(z.shape, dtype=F64, generator=g)
    assert Blur(k.detach(), "valid").coverage((8, 8))[0, 0, 0, 0] == 0

    def ours(z, y, gamma):
        return prox_l2(Blur(k, "valid"), z, y, gamma, solver=BOUNDARY, backward="unroll")

    _, grads = prox_gradients(ours, [z, y, gamma, k], v)
    _, truth = prox_gradients(lambda z, y, g: dense_prox(Blur(k, "valid"), z, y, g),
                              [z, y, gamma, k], v)  # fmt: skip
    for a, b in zip(grads, truth, strict=True):
        assert torch.isfinite(a).all()
        assert rel(a, b) < 1e-8
