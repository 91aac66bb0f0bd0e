"""Lanczos on explicit symmetric matrices: one operator, and K independent runs driven
by one block matvec (batched_lanczos)."""

import math

import pytest
import torch

from tests.core.tiny_problems import symmetric
from warmup_core.curvature import sharpness
from warmup_core.lanczos import batched_lanczos, lanczos


def test_lanczos_returns_largest_algebraic_not_largest_magnitude():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64, generator=gen))
    spectrum = torch.cat(
        [torch.tensor([-1000.0, -500.0, 3.0, 2.5, 2.0]), torch.linspace(-1.0, 1.0, 295)]
    ).double()
    mat = q @ torch.diag(spectrum) @ q.T
    values, vectors, info = lanczos(
        lambda v: mat @ v, 300, 3, tol=1e-10, max_iter=300, dtype=torch.float64, generator=gen
    )
    torch.testing.assert_close(values, torch.tensor([3.0, 2.5, 2.0], dtype=torch.float64))
    assert info.converged and info.num_matvecs < 300
    torch.testing.assert_close(mat @ vectors[:, 0], 3.0 * vectors[:, 0], atol=1e-7, rtol=0)


def test_lanczos_restarts_when_start_vector_spans_an_invariant_subspace():
    # v0 exactly a non-top eigenvector: the Krylov space breaks down after one step.
    mat = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    v0 = torch.zeros(20, dtype=torch.float64)
    v0[3] = 1.0
    values, _, info = lanczos(lambda v: mat @ v, 20, 1, tol=1e-10, v0=v0, dtype=torch.float64)
    assert float(values[0]) == pytest.approx(20.0, rel=1e-10) and info.converged


# -- batched --------------------------------------------------------------------------


def test_each_row_reproduces_lanczos_with_the_same_generator():
    mats = [symmetric(30, s) for s in range(3)]
    block = torch.stack(mats)
    values, vectors, infos = batched_lanczos(
        lambda v: torch.bmm(block, v[:, :, None])[:, :, 0],
        30,
        3,
        k=2,
        tol=1e-8,
        dtype=torch.float64,
        generators=[torch.Generator().manual_seed(10 + s) for s in range(3)],
    )
    for i, mat in enumerate(mats):
        ref, ref_vecs, ref_info = lanczos(
            lambda v, m=mat: m @ v,
            30,
            k=2,
            tol=1e-8,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(10 + i),
        )
        assert torch.allclose(values[i], ref, rtol=1e-10)
        assert infos[i].num_matvecs == ref_info.num_matvecs
        assert torch.allclose(vectors[i].abs(), ref_vecs.abs(), atol=1e-6)
        exact = torch.linalg.eigvalsh(mat).flip(0)[:2]
        assert torch.allclose(values[i], exact, rtol=1e-6)


def test_one_hvp_of_a_summed_loss_gives_every_members_sharpness():
    # Independent quadratics 0.5 x^T A_i x stacked on a member axis: block-diagonal Hessian.
    mats = torch.stack([symmetric(12, s) for s in range(4)])
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    total = 0.5 * torch.einsum("ki,kij,kj->", x, mats, x)
    (grad,) = torch.autograd.grad(total, x, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(grad, x, v, retain_graph=True)[0]

    values, _, _ = batched_lanczos(hvp, 12, 4, tol=1e-9, dtype=torch.float64)
    for i in range(4):
        single = sharpness(
            lambda p, i=i: 0.5 * p["x"] @ mats[i] @ p["x"], {"x": x[i].detach()}, tol=1e-9
        )
        assert values[i, 0].item() == pytest.approx(single, rel=1e-8)


def test_inactive_rows_are_fed_zeros_and_return_nan():
    mats = torch.stack([symmetric(10, s) for s in range(3)])
    fed = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        fed.append(v.clone())
        return torch.bmm(mats, v[:, :, None])[:, :, 0]

    values, vectors, infos = batched_lanczos(
        matvec, 10, 3, active=[True, False, True], dtype=torch.float64
    )
    assert all(bool((v[1] == 0).all()) for v in fed)
    assert math.isnan(values[1, 0].item()) and infos[1] is None
    assert bool((vectors[1] == 0).all())
    assert infos[0].converged and infos[2].converged


def test_converged_rows_stop_receiving_work():
    # Row 0 has a well separated top eigenvalue and converges long before row 1.
    easy = torch.diag(torch.cat([torch.tensor([50.0]), torch.linspace(0, 1, 39)])).double()
    mats = torch.stack([easy, symmetric(40, 1)])
    fed = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        fed.append(v.clone())
        return torch.bmm(mats, v[:, :, None])[:, :, 0]

    values, _, infos = batched_lanczos(matvec, 40, 2, tol=1e-10, dtype=torch.float64)
    assert values[0, 0].item() == pytest.approx(50.0)
    done = infos[0].num_matvecs
    assert done < infos[1].num_matvecs == len(fed)
    assert all(bool((v[0] == 0).all()) for v in fed[done:])
    assert not bool((fed[done - 1][0] == 0).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"batch": 0}, "batch must be"),
        ({"k": 11}, "k must be at most"),
        ({"active": [True]}, "must have 2 entries"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    args = {"dim": 10, "batch": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        batched_lanczos(lambda v: v, **args)


# -- tracking: warm starts and eigenvalue crossings ---------------------------------------


def _two_outliers(dim: int, first: float, second: float, seed: int) -> torch.Tensor:
    """A symmetric matrix whose eigenvector e_0 has eigenvalue `first`, e_1 `second`, and
    the rest a bulk in [0, 5], in a random orthonormal basis fixed by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=gen))
    bulk = 5.0 * torch.rand(dim - 2, dtype=torch.float64, generator=gen)
    return q @ torch.diag(torch.cat([torch.tensor([first, second]).double(), bulk])) @ q.T


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("after", [(9.0, 10.0), (9.6, 10.0)])
def test_a_crossing_of_the_top_two_eigenvalues_between_measurements_is_caught(seed, after):
    # Measured at 10 (top) and 9; by the next measurement the two have swapped, by 10% or
    # by 4% of the top (above sqrt(tol) = 3.2%, where the detector's guarantee starts).
    before, later = _two_outliers(300, 10.0, 9.0, seed), _two_outliers(300, *after, seed)
    gen = torch.Generator().manual_seed(100 + seed)
    opts = {"tol": 1e-3, "dtype": torch.float64, "generator": gen}
    _, _, first = lanczos(lambda v: before @ v, 300, **opts)
    assert first.warm_start.shape == (300, 2)  # the top Ritz vector and the detector
    torch.testing.assert_close(
        first.warm_start.T @ first.warm_start, torch.eye(2, dtype=torch.float64), atol=1e-8, rtol=0
    )
    values, _, _ = lanczos(lambda v: later @ v, 300, v0=first.warm_start, **opts)
    assert values[0].item() == pytest.approx(10.0, rel=1e-3)
    # The previous top eigenvector alone is a near-eigenvector of `later` (of 9 or 9.6), so
    # Lanczos from it stops at once on the wrong eigenvalue: the detector is what catches it.
    alone, _, _ = lanczos(lambda v: later @ v, 300, v0=first.warm_start[:, 0], **opts)
    assert alone[0].item() == pytest.approx(after[0], rel=1e-3)


def test_a_warm_start_without_a_crossing_stops_within_a_few_products():
    mat = _two_outliers(300, 10.0, 9.0, 0)
    gen = torch.Generator().manual_seed(0)
    opts = {"tol": 1e-3, "dtype": torch.float64, "generator": gen}
    _, _, first = lanczos(lambda v: mat @ v, 300, **opts)
    moved = mat + 1e-3 * symmetric(300, 1)  # a small step of training
    warm, _, info = lanczos(lambda v: moved @ v, 300, v0=first.warm_start, **opts)
    exact = torch.linalg.eigvalsh(moved)[-1].item()
    assert warm[0].item() == pytest.approx(exact, rel=1e-3)
    assert info.num_matvecs <= 4 < first.num_matvecs
