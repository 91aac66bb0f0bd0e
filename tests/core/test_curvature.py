"""Sharpness from HVPs checked against dense Hessians of tiny models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.core.tiny_problems import (
    CASES,
    dense_hessian,
    half_mse,
    make_problem,
    rel_err,
    symmetric,
)
from warmup_core.curvature import (
    block_sharpness,
    preconditioned_eigenpairs,
    preconditioned_sharpness,
    sharpness,
    top_eigenpairs,
)
from warmup_core.hvp import BlockHVPOperator, flatten_params, model_loss_fn, unflatten_params


@pytest.mark.parametrize(("kind", "loss"), CASES)
def test_sharpness_float64_matches_dense_top_eigenvalue(kind, loss):
    loss_fn, params = make_problem(kind, loss)
    exact = float(torch.linalg.eigvalsh(dense_hessian(loss_fn, params))[-1])
    got = sharpness(loss_fn, params, dtype=torch.float64, tol=1e-5)
    assert rel_err(got, exact) <= 1e-4


@pytest.mark.parametrize(("kind", "loss"), CASES)
def test_sharpness_float32_matches_dense_to_float32_accuracy(kind, loss):
    loss_fn, params = make_problem(kind, loss)
    exact = float(torch.linalg.eigvalsh(dense_hessian(loss_fn, params))[-1])
    got = sharpness(loss_fn, params)
    assert rel_err(got, exact) <= 2e-3


def test_top5_eigenpairs_match_dense():
    loss_fn, params = make_problem("mlp", "xent")
    hess = dense_hessian(loss_fn, params)
    exact = torch.linalg.eigvalsh(hess).flip(0)[:5]
    result = top_eigenpairs(loss_fn, params, k=5, dtype=torch.float64, tol=1e-8, max_iter=200)
    assert result.converged
    torch.testing.assert_close(
        torch.tensor(result.eigenvalues, dtype=torch.float64), exact, rtol=1e-6, atol=1e-9
    )
    vecs = result.eigenvectors
    assert vecs.shape == (hess.shape[0], 5)
    # Eigenvectors: orthonormal and H u = lambda u.
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(hess @ vecs, vecs * exact, atol=1e-5 * float(exact[0]), rtol=0)


def test_warm_start_over_training_steps_needs_far_fewer_hvps():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    loss_fn = model_loss_fn(model, half_mse, torch.randn(200, 20), torch.randn(200, 3))
    params = {k: v.detach() for k, v in model.named_parameters()}
    first = top_eigenpairs(loss_fn, params)
    v0, cold_total, warm_total = first.eigenvectors[:, 0], 0, 0
    for _ in range(5):  # GD at half the stability threshold, re-measuring after each step
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss_fn(leaves), list(leaves.values()))
        params = {
            k: (v - 1.0 / first.top * g).detach()
            for (k, v), g in zip(leaves.items(), grads, strict=True)
        }
        cold = top_eigenpairs(loss_fn, params)
        warm = top_eigenpairs(loss_fn, params, v0=v0)
        assert warm.converged and cold.converged
        assert warm.top == pytest.approx(cold.top, rel=2e-3)
        v0, cold_total, warm_total = (
            warm.eigenvectors[:, 0],
            cold_total + cold.num_hvps,
            warm_total + warm.num_hvps,
        )
    # Measured 19 vs 43 HVPs; a warm start saves about half here, not a fixed factor.
    assert warm_total <= 0.6 * cold_total


def test_warm_start_accepts_a_dict_shaped_like_params():
    loss_fn, params = make_problem("mlp", "mse")
    first = top_eigenpairs(loss_fn, params, tol=1e-5)
    as_dict = unflatten_params(first.eigenvectors[:, 0], params)
    again = top_eigenpairs(loss_fn, params, tol=1e-5, v0=as_dict)
    # From an exact eigenvector only the random admixture (sqrt(tol)) is left to resolve.
    assert again.num_hvps <= first.num_hvps // 2
    assert again.top == pytest.approx(first.top, rel=1e-4)


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_preconditioned_sharpness_matches_dense_symmetric_form(loss):
    loss_fn, params = make_problem("mlp", loss)
    gen = torch.Generator().manual_seed(3)
    precond = {k: torch.rand(v.shape, generator=gen) * 10 + 0.01 for k, v in params.items()}
    d = flatten_params(precond).double()
    sym = dense_hessian(loss_fn, params) / torch.sqrt(d[:, None] * d[None, :])
    exact = float(torch.linalg.eigvalsh(sym)[-1])
    got = preconditioned_sharpness(loss_fn, params, precond, dtype=torch.float64, tol=1e-6)
    assert isinstance(got, float)
    assert rel_err(got, exact) <= 1e-5


def test_preconditioned_eigenpairs_are_those_of_the_dense_symmetric_form():
    loss_fn, params = make_problem("mlp", "xent")
    gen = torch.Generator().manual_seed(3)
    precond = {k: torch.rand(v.shape, generator=gen) * 10 + 0.01 for k, v in params.items()}
    d = flatten_params(precond).double()
    sym = dense_hessian(loss_fn, params) / torch.sqrt(d[:, None] * d[None, :])
    exact = torch.linalg.eigvalsh(sym).flip(0)[:3]
    result = preconditioned_eigenpairs(
        loss_fn, params, precond, k=3, dtype=torch.float64, tol=1e-8, max_iter=200
    )
    assert result.converged
    values = torch.tensor(result.eigenvalues, dtype=torch.float64)
    torch.testing.assert_close(values, exact, rtol=1e-6, atol=1e-9)
    vecs = result.eigenvectors
    torch.testing.assert_close(sym @ vecs, vecs * exact, atol=1e-5 * float(exact[0]), rtol=0)


def test_preconditioned_sharpness_with_constant_precond_scales_sharpness():
    loss_fn, params = make_problem("cnn", "xent")
    precond = {k: torch.full_like(v, 4.0) for k, v in params.items()}
    plain = sharpness(loss_fn, params, dtype=torch.float64, tol=1e-7)
    pre = preconditioned_sharpness(loss_fn, params, precond, dtype=torch.float64, tol=1e-7)
    assert pre == pytest.approx(plain / 4.0, rel=1e-6)


def _fcn_problem(parameterization: str):
    models = pytest.importorskip("warmup_core.models")
    model = models.build_model(
        "fcn", in_shape=(8,), out_dim=3, parameterization=parameterization, width=16, depth=3
    )
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    params = {k: v.detach() for k, v in model.named_parameters()}
    return model_loss_fn(model, half_mse, x, y), params


@pytest.mark.parametrize("parameterization", ["sp", "mup"])
def test_sharpness_of_library_fcn_matches_dense(parameterization):
    loss_fn, params = _fcn_problem(parameterization)
    exact = float(torch.linalg.eigvalsh(dense_hessian(loss_fn, params))[-1])
    assert rel_err(sharpness(loss_fn, params, dtype=torch.float64, tol=1e-6), exact) <= 1e-4


def test_sharpness_of_library_myrtle_cnn_matches_dense():
    models = pytest.importorskip("warmup_core.models")
    model = models.build_model("myrtle", in_shape=(3, 8, 8), out_dim=4, width=4, depth=5)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss_fn = model_loss_fn(model, F.cross_entropy, x, y)
    exact = float(torch.linalg.eigvalsh(dense_hessian(loss_fn, params))[-1])
    assert rel_err(sharpness(loss_fn, params, dtype=torch.float64, tol=1e-6), exact) <= 1e-4


def test_block_sharpness_matches_each_members_dense_top_eigenvalue():
    mats = torch.stack([symmetric(8, s) for s in range(5)])
    x = {"x": torch.randn(5, 8, dtype=torch.float64)}

    def losses_for(rows: list[int]):
        return lambda p: 0.5 * torch.einsum("ki,kij,kj->k", p["x"], mats[rows], p["x"])

    op = BlockHVPOperator(losses_for(list(range(5))), x, None, losses_for)
    active = [True, False, True, True, True]
    values, _ = block_sharpness(op, active=active, tol=1e-10, max_iter=50)
    for i in range(5):
        if active[i]:
            assert values[i] == pytest.approx(torch.linalg.eigvalsh(mats[i])[-1].item(), rel=1e-8)
        else:
            assert math.isnan(values[i])


# -- errors ---------------------------------------------------------------------------


def test_non_scalar_loss_is_rejected_naming_loss_fn():
    params = {"w": torch.randn(3)}
    with pytest.raises(ValueError, match="loss_fn"):
        sharpness(lambda p: p["w"] ** 2, params)


@pytest.mark.parametrize(
    ("precond", "match"),
    [
        ({"w": torch.ones(3)}, "precond keys"),
        ({"w": torch.ones(3), "b": torch.ones(2), "c": torch.ones(1)}, "precond keys"),
        ({"w": torch.ones(4), "b": torch.ones(2)}, r"precond\['w'\] must have shape"),
        ({"w": torch.tensor([1.0, 0.0, 1.0]), "b": torch.ones(2)}, "strictly positive"),
        ({"w": torch.ones(3), "b": torch.tensor([1.0, -2.0])}, "strictly positive"),
    ],
)
def test_bad_precond_is_rejected_naming_it(precond, match):
    params = {"w": torch.randn(3), "b": torch.randn(2)}
    loss_fn = lambda p: (p["w"] ** 2).sum() + (p["b"] ** 4).sum()  # noqa: E731
    with pytest.raises(ValueError, match=match):
        preconditioned_sharpness(loss_fn, params, precond)


@pytest.mark.parametrize(
    ("option", "value"), [("tol", 0.0), ("tol", -1e-3), ("max_iter", 0), ("k", 0), ("k", 1.5)]
)
def test_non_positive_solver_options_are_rejected_naming_them(option, value):
    params = {"w": torch.randn(5)}
    with pytest.raises(ValueError, match=option):
        sharpness(lambda p: (p["w"] ** 2).sum(), params, **{option: value})


def test_bad_params_and_v0_are_rejected():
    loss_fn = lambda p: (p["w"] ** 2).sum()  # noqa: E731
    with pytest.raises(ValueError, match="params"):
        sharpness(loss_fn, {})
    with pytest.raises(ValueError, match="v0"):
        sharpness(loss_fn, {"w": torch.randn(5)}, v0=torch.zeros(5))
    with pytest.raises(ValueError, match="v0"):
        sharpness(loss_fn, {"w": torch.randn(5)}, v0=torch.ones(4))
    with pytest.raises(ValueError, match="method"):
        sharpness(loss_fn, {"w": torch.randn(5)}, method="magic")


def test_quadratic_sharpness_is_exact_and_never_forms_a_matrix():
    # 0.5 x^T A x on a 2000-dim diagonal A: the answer is max(A), found in a few HVPs.
    diag = torch.linspace(0.0, 1.0, 2000, dtype=torch.float64)
    diag[17] = 3.0
    result = top_eigenpairs(
        lambda p: 0.5 * (diag * p["x"] ** 2).sum(),
        {"x": torch.randn(2000, dtype=torch.float64)},
        tol=1e-8,
    )
    assert result.top == pytest.approx(3.0, rel=1e-10) and result.num_hvps < 40
    assert math.isclose(abs(float(result.eigenvectors[17, 0])), 1.0, rel_tol=1e-6)
