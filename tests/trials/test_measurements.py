"""A trial's recorded curvature against dense linear algebra computed independently.

The expected values here never come from the code under test: the Hessian is formed
densely with `torch.autograd.functional.hessian`, Adam's state is torch.optim's own
(per-layer learning-rate multipliers as parameter groups), and eigenvalues come from
`torch.linalg.eigvalsh`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from trials import Problem, run_trial
from trials.config import TrialConfig
from warmup_core.optim import optimizer_family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ETA = 0.01
TINY = {
    "model": {"name": "fcn", "width": 8, "depth": 3},
    "dataset": {"name": "digits", "train_size": 48, "test_size": 16},
    "parameterization": "mup",
    "num_steps": 4,
    "eta_trgt": ETA,
    "sharpness_every": 1,
    "sharpness_tol": 1e-10,
    "sharpness_max_iter": 400,
    "dtype": "float64",
    "device": "cpu",
    "stuck_accuracy_factor": 0.01,
}


def _setup(config: TrialConfig):
    problem = Problem(config)
    model = problem.build_model(config.init_seed)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def unflat(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = flat.split(sizes)
        return {n: part.view(s) for n, part, s in zip(names, parts, shapes, strict=True)}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, unflat(flat), (problem.x_train,))
        target = torch.nn.functional.one_hot(problem.y_train, problem.num_classes).double()
        return 0.5 * (logits - target).pow(2).sum(-1).mean()  # MSE as the paper defines it

    return model, names, sizes, loss


def _top(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh((matrix + matrix.T) / 2)[-1])


def test_recorded_lambda0_and_sharpness_match_a_dense_hessian():
    config = TrialConfig.model_validate({**TINY, "optimizer": {"name": "sgd", "momentum": 0.5}})
    model, _, _, loss = _setup(config)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    torch_params = [flat.clone().requires_grad_(True)]
    sgd = torch.optim.SGD(torch_params, lr=ETA, momentum=0.5)
    expected = []
    for _ in range(config.num_steps):
        theta = torch_params[0].detach().clone()
        expected.append(_top(torch.autograd.functional.hessian(loss, theta)))
        sgd.zero_grad()
        loss(torch_params[0]).backward()
        sgd.step()

    result = run_trial(config)
    assert result.status == "completed"
    assert result.summary["lambda0"] == pytest.approx(expected[0], rel=1e-7)
    assert result.steps["sharpness"] == pytest.approx(expected, rel=1e-7)
    # The threshold of heavy-ball momentum 0.5: (2 + 2 * 0.5) / eta.
    assert result.steps["threshold"] == pytest.approx([3.0 / ETA] * config.num_steps)


@pytest.mark.parametrize(
    ("name", "weight_decay"), [("adam", 0.0), ("adam", 0.05), ("adamw", 0.05), ("gi-adam", 0.0)]
)
@pytest.mark.parametrize("simple_mup", [False, True])
def test_recorded_preconditioned_sharpness_is_that_of_the_update_applied(
    name, weight_decay, simple_mup
):
    optimizer = {"name": name, **({"weight_decay": weight_decay} if weight_decay else {})}
    config = TrialConfig.model_validate({**TINY, "optimizer": optimizer, "simple_mup": simple_mup})
    model, names, _sizes, loss = _setup(config)
    mults = model.lr_multipliers(optimizer_family(name))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    # torch.optim's Adam (coupled L2) or AdamW, one parameter group per tensor so that each
    # gets its learning-rate multiplier.
    leaves = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    groups = [{"params": [p], "lr": ETA * mults[n]} for n, p in zip(names, leaves, strict=True)]
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    ref = cls(groups, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)

    expected = []
    for t in range(1, config.num_steps + 1):
        theta = torch.cat([p.detach().reshape(-1) for p in leaves])
        hessian = torch.autograd.functional.hessian(loss, theta)
        ref.zero_grad()
        loss(torch.cat([p.reshape(-1) for p in leaves])).backward()
        if name == "gi-adam" and t == 1:  # GI-Adam: v_0 = g_0^2, then Adam as usual
            for p in leaves:
                ref.state[p] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": p.grad.detach() ** 2,
                }
        ref.step()  # its state now holds v_t, the second moment update t applies
        diag = []
        for n, p in zip(names, leaves, strict=True):
            v_hat = ref.state[p]["exp_avg_sq"] / (1 - beta2**t)
            precond = (1 - beta1**t) * (v_hat.sqrt() + eps)  # theta -= lr * m * m_t / P
            diag.append((mults[n] / precond).reshape(-1))
        d_sqrt = torch.cat(diag).sqrt()
        coupled = weight_decay if name == "adam" else 0.0
        operator = d_sqrt[:, None] * (hessian + coupled * torch.eye(len(theta))) * d_sqrt
        expected.append(_top(operator))

    result = run_trial(config)
    assert result.status in ("completed", "stuck")
    assert result.steps["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-6)
    assert all(math.isfinite(v) for v in expected)


def test_simple_mup_changes_adams_operator():
    # muP's per-layer Adam rates (1/width on hidden layers) are part of the operator; the
    # simple variant drops them. The dense test above checks both values exactly.
    full = run_trial(TrialConfig.model_validate({**TINY, "optimizer": {"name": "adam"}}))
    simple = run_trial(
        TrialConfig.model_validate({**TINY, "optimizer": {"name": "adam"}, "simple_mup": True})
    )
    assert full.steps["train_loss"][1] != pytest.approx(simple.steps["train_loss"][1], rel=1e-6)
    first_full = full.steps["preconditioned_sharpness"][0]
    assert first_full != pytest.approx(simple.steps["preconditioned_sharpness"][0], rel=1e-3)


def test_current_batch_measurement_averages_lambda0_over_minibatches():
    config = TrialConfig.model_validate(
        {
            **TINY,
            "parameterization": "sp",
            "batch_size": 16,
            "sharpness_batch": "current",
            "lambda0_batches": 3,
            "num_steps": 2,
        }
    )
    problem = Problem(config)
    model, _, _, _ = _setup(config)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    shapes = [p.shape for p in model.parameters()]

    def batch_loss(step: int):
        idx = problem.batch(step)
        x, y = problem.x_train[idx], problem.y_train[idx]

        def loss(v: torch.Tensor) -> torch.Tensor:
            params = {
                n: part.view(s) for n, part, s in zip(names, v.split(sizes), shapes, strict=False)
            }
            logits = functional_call(model, params, (x,))
            target = torch.nn.functional.one_hot(y, problem.num_classes).double()
            return 0.5 * (logits - target).pow(2).sum(-1).mean()

        return loss

    tops = [_top(torch.autograd.functional.hessian(batch_loss(s), flat)) for s in (1, 2, 3)]
    result = run_trial(config)
    assert result.summary["lambda0"] == pytest.approx(sum(tops) / 3, rel=1e-7)
    assert result.steps["sharpness"][0] == pytest.approx(tops[0], rel=1e-7)  # batch of update 1


def _rectification(t: int, beta2: float) -> float | None:
    """RAdam's r_t (None while rho_t <= 5), from Liu et al.'s formulas as torch documents."""
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho <= 5:
        return None
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


@pytest.mark.parametrize("simple_mup", [False, True])
def test_radam_preconditioned_sharpness_in_both_phases_matches_a_dense_operator(simple_mup):
    # Updates 1-5 (rho_t <= 5 at beta2 = 0.999) are SGD on the bias-corrected momentum:
    # P = 1 - beta1^t. From update 6 the rectified Adam step: P = (1 - beta1^t)(sqrt(v_t)
    # + eps) / (r_t sqrt(1 - beta2^t)). The state is torch.optim.RAdam's own.
    config = TrialConfig.model_validate(
        {**TINY, "optimizer": {"name": "radam"}, "simple_mup": simple_mup, "num_steps": 8}
    )
    model, names, _sizes, loss = _setup(config)
    mults = model.lr_multipliers("adam")
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    leaves = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    groups = [{"params": [p], "lr": ETA * mults[n]} for n, p in zip(names, leaves, strict=True)]
    ref = torch.optim.RAdam(groups, betas=(beta1, beta2), eps=eps)

    expected, phases = [], []
    for t in range(1, config.num_steps + 1):
        theta = torch.cat([p.detach().reshape(-1) for p in leaves])
        hessian = torch.autograd.functional.hessian(loss, theta)
        ref.zero_grad()
        loss(torch.cat([p.reshape(-1) for p in leaves])).backward()
        ref.step()
        r = _rectification(t, beta2)
        phases.append(r is not None)
        diag = []
        for n, p in zip(names, leaves, strict=True):
            if r is None:
                precond = torch.full_like(p, 1 - beta1**t)
            else:
                v = ref.state[p]["exp_avg_sq"]
                precond = (1 - beta1**t) * (v.sqrt() + eps) / (r * math.sqrt(1 - beta2**t))
            diag.append((mults[n] / precond).reshape(-1))
        d_sqrt = torch.cat(diag).sqrt()
        expected.append(_top(d_sqrt[:, None] * hessian * d_sqrt))
    assert phases == [False] * 5 + [True] * 3

    result = run_trial(config)
    assert result.status in ("completed", "stuck")
    assert result.steps["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-6)
    # the threshold is Adam's, (2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta, in both phases
    assert result.steps["threshold"] == pytest.approx([38 / ETA] * config.num_steps)


def test_random_v0_adam_preconditioned_sharpness_matches_a_dense_operator():
    # torch.optim.Adam started from v_0 = r * r, r ~ N(0, I) drawn in float64 from a
    # generator seeded v0_seed, in parameter order, rescaled to ||r|| = ||g_0||.
    seed = 5
    config = TrialConfig.model_validate(
        {**TINY, "optimizer": {"name": "random-v0-adam", "v0_seed": seed}, "simple_mup": True}
    )
    model, _names, _sizes, loss = _setup(config)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    leaves = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    ref = torch.optim.Adam(leaves, lr=ETA, betas=(beta1, beta2), eps=eps)

    expected = []
    for t in range(1, config.num_steps + 1):
        theta = torch.cat([p.detach().reshape(-1) for p in leaves])
        hessian = torch.autograd.functional.hessian(loss, theta)
        ref.zero_grad()
        loss(torch.cat([p.reshape(-1) for p in leaves])).backward()
        if t == 1:
            gen = torch.Generator().manual_seed(seed)
            r = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in leaves]
            g_norm2 = sum(float((p.grad**2).sum()) for p in leaves)
            r_norm2 = sum(float((x**2).sum()) for x in r)
            for p, x in zip(leaves, r, strict=True):
                ref.state[p] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": x * x * g_norm2 / r_norm2,
                }
        ref.step()
        v_hat = torch.cat([ref.state[p]["exp_avg_sq"].reshape(-1) for p in leaves]) / (1 - beta2**t)
        d_sqrt = (1 / ((1 - beta1**t) * (v_hat.sqrt() + eps))).sqrt()
        expected.append(_top(d_sqrt[:, None] * hessian * d_sqrt))

    result = run_trial(config)
    assert result.status in ("completed", "stuck")
    assert result.steps["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-6)
