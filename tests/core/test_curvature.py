"""Curvature from HVPs checked against dense Hessians of tiny models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from warmup_core.curvature import (
    HVP_METHODS,
    HVPOperator,
    flatten_params,
    hessian_trace,
    lanczos,
    model_loss_fn,
    preconditioned_sharpness,
    sharpness,
    spectral_density,
    top_eigenpairs,
    unflatten_params,
)


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Written out rather than F.mse_loss: torch.func.jvp-of-grad trips over
    # F.mse_loss's backward (ZeroTensor error) in torch 2.13, and the "jvp" method is tested.
    return 0.5 * ((out - y) ** 2).sum(dim=-1).mean()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.head(x.flatten(1))


def make_problem(kind: str, loss: str, seed: int = 0):
    """A tiny model, a batch and its loss_fn; returns (loss_fn, params)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
        )
        x = torch.randn(40, 6)
    else:
        model = TinyCNN()
        x = torch.randn(24, 2, 6, 6)
    if loss == "mse":
        y = torch.randn(x.shape[0], 3)
        criterion = half_mse
    else:
        y = torch.randint(0, 3, (x.shape[0],))
        criterion = F.cross_entropy
    params = {k: v.detach() for k, v in model.named_parameters()}
    return model_loss_fn(model, criterion, x, y), params


def dense_hessian(loss_fn, params) -> torch.Tensor:
    """Float64 Hessian of loss_fn on the flat parameter vector (the reference)."""
    p64 = {k: v.double() for k, v in params.items()}
    flat = flatten_params(p64)
    # vectorize=True is 30x slower on the CNN's double backward through conv.
    return torch.autograd.functional.hessian(lambda f: loss_fn(unflatten_params(f, p64)), flat)


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


CASES = [("mlp", "mse"), ("mlp", "xent"), ("cnn", "mse"), ("cnn", "xent")]


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


@pytest.mark.parametrize("method", HVP_METHODS)
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_every_hvp_method_matches_dense_hessian_vector_product(method, loss):
    loss_fn, params = make_problem("mlp", loss)
    hess = dense_hessian(loss_fn, params)
    op = HVPOperator(loss_fn, params, method=method, dtype=torch.float64)
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op(v), hess @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(op(2 * v), 2 * (hess @ v), rtol=1e-9, atol=1e-11)
    assert op.num_hvps == 2


def test_operator_leaves_caller_params_untouched_and_reports_loss():
    loss_fn, params = make_problem("mlp", "mse")
    before = {k: v.clone() for k, v in params.items()}
    op = HVPOperator(loss_fn, params, dtype=torch.float64)
    op(torch.ones(op.dim, dtype=torch.float64))
    assert all(not v.requires_grad and torch.equal(v, before[k]) for k, v in params.items())
    assert op.loss == pytest.approx(float(loss_fn(params)), rel=1e-6)
    assert op.dtype == torch.float64 and params["0.weight"].dtype == torch.float32


def test_sequence_of_losses_gives_their_average_hessian():
    fn_a, params = make_problem("mlp", "mse", seed=0)
    fn_b, _ = make_problem("mlp", "mse", seed=1)  # same architecture, other batch
    fn_b_at_a = lambda p: fn_b(p)  # noqa: E731  (evaluated at params of model a)
    expected = 0.5 * (dense_hessian(fn_a, params) + dense_hessian(fn_b_at_a, params))
    op = HVPOperator([fn_a, fn_b_at_a], params, dtype=torch.float64)
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op(v), expected @ v, rtol=1e-9, atol=1e-11)
    top = sharpness([fn_a, fn_b_at_a], params, dtype=torch.float64, tol=1e-6)
    assert rel_err(top, float(torch.linalg.eigvalsh(expected)[-1])) <= 1e-5


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


def test_warm_start_over_training_steps_needs_far_fewer_hvps():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    loss_fn = model_loss_fn(model, half_mse, torch.randn(200, 20), torch.randn(200, 3))
    params = {k: v.detach() for k, v in model.named_parameters()}
    first = sharpness(loss_fn, params, return_info=True)
    v0, cold_total, warm_total = first.eigenvectors[:, 0], 0, 0
    for _ in range(5):  # GD at half the stability threshold, re-measuring after each step
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss_fn(leaves), list(leaves.values()))
        params = {
            k: (v - 1.0 / first.top * g).detach()
            for (k, v), g in zip(leaves.items(), grads, strict=True)
        }
        cold = sharpness(loss_fn, params, return_info=True)
        warm = sharpness(loss_fn, params, v0=v0, return_info=True)
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
    first = sharpness(loss_fn, params, tol=1e-5, return_info=True)
    as_dict = unflatten_params(first.eigenvectors[:, 0], params)
    again = sharpness(loss_fn, params, tol=1e-5, v0=as_dict, return_info=True)
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
    assert rel_err(got, exact) <= 1e-5


def test_preconditioned_sharpness_with_constant_precond_scales_sharpness():
    loss_fn, params = make_problem("cnn", "xent")
    precond = {k: torch.full_like(v, 4.0) for k, v in params.items()}
    plain = sharpness(loss_fn, params, dtype=torch.float64, tol=1e-7)
    pre = preconditioned_sharpness(loss_fn, params, precond, dtype=torch.float64, tol=1e-7)
    assert pre == pytest.approx(plain / 4.0, rel=1e-6)


def test_hutchinson_trace_error_bar_is_informative_on_the_mlp():
    loss_fn, params = make_problem("mlp", "xent")
    exact = float(dense_hessian(loss_fn, params).trace())
    gen = torch.Generator().manual_seed(1)
    est = hessian_trace(loss_fn, params, num_samples=100, generator=gen, return_info=True)
    assert est.stderr < 0.2 * abs(exact) and abs(est.trace - exact) <= 4 * est.stderr


def test_hutchinson_trace_is_exact_for_a_diagonal_hessian():
    diag = torch.linspace(-2.0, 5.0, 30, dtype=torch.float64)
    loss_fn = lambda p: 0.5 * (diag * p["x"] ** 2).sum()  # noqa: E731
    params = {"x": torch.randn(30, dtype=torch.float64)}
    est = hessian_trace(loss_fn, params, num_samples=3, return_info=True)
    assert est.trace == pytest.approx(float(diag.sum()), rel=1e-12) and est.num_hvps == 3


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_hutchinson_trace_agrees_with_dense_trace_within_error(kind):
    loss_fn, params = make_problem(kind, "xent")
    exact = float(dense_hessian(loss_fn, params).trace())
    gen = torch.Generator().manual_seed(0)
    est = hessian_trace(
        loss_fn, params, num_samples=200, generator=gen, dtype=torch.float64, return_info=True
    )
    assert abs(est.trace - exact) <= 4 * est.stderr


def test_spectral_density_is_normalized_and_recovers_extreme_eigenvalues():
    loss_fn, params = make_problem("mlp", "mse")
    eig = torch.linalg.eigvalsh(dense_hessian(loss_fn, params))
    dim = eig.numel()
    gen = torch.Generator().manual_seed(0)
    sd = spectral_density(
        loss_fn, params, num_probes=2, num_steps=dim, dtype=torch.float64, generator=gen
    )
    area = float(((sd.density[1:] + sd.density[:-1]) / 2 * (sd.grid[1] - sd.grid[0])).sum())
    assert area == pytest.approx(1.0, abs=1e-3)
    for nodes, weights in zip(sd.nodes, sd.weights, strict=True):
        assert weights.sum() == pytest.approx(1.0, abs=1e-10)
        assert nodes.max() == pytest.approx(float(eig[-1]), rel=1e-6)
        assert nodes.min() == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-8)
    assert sd.num_hvps <= 2 * dim


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
    result = sharpness(
        lambda p: 0.5 * (diag * p["x"] ** 2).sum(),
        {"x": torch.randn(2000, dtype=torch.float64)},
        tol=1e-8,
        return_info=True,
    )
    assert result.top == pytest.approx(3.0, rel=1e-10) and result.num_hvps < 40
    assert math.isclose(abs(float(result.eigenvectors[17, 0])), 1.0, rel_tol=1e-6)
