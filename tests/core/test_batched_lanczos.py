"""batched_lanczos: K independent Lanczos runs driven by one block matvec."""

import math

import pytest
import torch

from warmup_core.curvature import (
    BlockHVPOperator,
    batched_lanczos,
    block_sharpness,
    lanczos,
    sharpness,
)


def _symmetric(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (a + a.T) / 2 + torch.diag(torch.linspace(0, 5 + seed, dim, dtype=torch.float64))


def test_each_row_reproduces_lanczos_with_the_same_generator():
    mats = [_symmetric(30, s) for s in range(3)]
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
    mats = torch.stack([_symmetric(12, s) for s in range(4)])
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
    mats = torch.stack([_symmetric(10, s) for s in range(3)])
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
    mats = torch.stack([easy, _symmetric(40, 1)])
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


def test_block_operator_applies_the_wanted_rows_and_drops_the_rest_once_few_remain():
    # Quadratics 0.5 (x_i^T A_i x_i + b_i x_i^2 sum): block i of the Hessian is A_i + b_i I.
    k, dim = 6, 5
    mats = torch.stack([_symmetric(dim, s) for s in range(k)])
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


def test_block_sharpness_matches_each_members_dense_top_eigenvalue():
    mats = torch.stack([_symmetric(8, s) for s in range(5)])
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
