"""Hessian-vector products checked against dense Hessians of tiny models."""

from __future__ import annotations

import pytest
import torch

from tests.core.tiny_problems import dense_hessian, make_problem, rel_err, symmetric
from warmup_core.curvature import sharpness
from warmup_core.hvp import HVP_METHODS, BlockHVPOperator, HVPOperator


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


def test_block_operator_applies_the_wanted_rows_and_drops_the_rest_once_few_remain():
    # Quadratics 0.5 (x_i^T A_i x_i + b_i x_i^2 sum): block i of the Hessian is A_i + b_i I.
    k, dim = 6, 5
    mats = torch.stack([symmetric(dim, s) for s in range(k)])
    l2 = torch.arange(k, dtype=torch.float64) / 10
    built: list[list[int]] = []

    def losses_for(rows: list[int]):
        built.append(list(rows))
        return lambda p: 0.5 * torch.einsum("ki,kij,kj->k", p["x"], mats[rows], p["x"])

    x = {"x": torch.randn(k, dim, dtype=torch.float64)}
    op = BlockHVPOperator(losses_for(list(range(k))), x, l2, losses_for)
    v = torch.randn(k, dim, dtype=torch.float64)
    dense = torch.stack([(mats[i] + l2[i] * torch.eye(dim)) @ v[i] for i in range(k)])
    for rows in ([0, 1, 2, 3, 4, 5], [0, 2, 3, 5], [1, 3, 5], [3, 5], [5]):
        torch.testing.assert_close(op.apply_rows(v[rows], rows), dense[rows])
    # Rebuilt for the rows alone when at most half remain: 3 of 6, then 1 of 3.
    assert built == [list(range(k)), [1, 3, 5], [5]]
