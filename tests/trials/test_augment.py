"""Augmentation (`trials.augment`) against its definition (the official pipeline), the
losses on soft labels, and trials: the batch a trial trains and measures on, and packed
members drawing the same augmented batches as they would alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from trials import Problem, run_pack, run_trial
from trials.augment import Augmentation
from trials.config import TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int, shape=(1, 6, 6), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64), torch.arange(n) % 10


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest():
    x, y = _batch(400, (2, 5, 6))
    out, labels = Augmentation(flip=True)(x, y, 10, data_seed=3, t=7)
    assert labels is y  # no mixup: the labels stay hard
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    assert 150 < int(mirrored.sum()) < 250  # p = 1/2 of 400: 200 +- 10


def _window_offsets(out: torch.Tensor, source: torch.Tensor, pad: int) -> list:
    """For each image, the offsets (0 .. 2 pad inclusive) where it is a window of its source
    zero-padded by `pad`."""
    padded = F.pad(source, (pad, pad, pad, pad))
    h, w = out.shape[-2:]
    found = []
    for i in range(len(out)):
        hits = [
            (a, b)
            for a in range(2 * pad + 1)
            for b in range(2 * pad + 1)
            if torch.equal(padded[i, :, a : a + h, b : b + w], out[i])
        ]
        found.append(hits)
    return found


def test_crop_is_a_window_of_the_zero_padded_image_at_offsets_up_to_2p_minus_1():
    x, y = _batch(300)
    out, _ = Augmentation(crop_padding=2)(x, y, 10, data_seed=0, t=1)
    hits = _window_offsets(out, x, 2)
    assert all(len(h) == 1 for h in hits)
    # jax randint(0, 2 * pad): offsets 0..3 on each axis, never 4 (a shift of +pad)
    assert {h[0] for h in hits} == {(a, b) for a in range(4) for b in range(4)}


def test_flip_comes_before_crop():
    # Cropping a flipped image at offset j is flipping a crop at offset 2p - j: had the
    # flip come second, mirrored images would show offsets 1..2p, and 2p never occurs.
    x, y = _batch(300)
    out, _ = Augmentation(flip=True, crop_padding=2)(x, y, 10, data_seed=1, t=4)
    plain, mirrored = _window_offsets(out, x, 2), _window_offsets(out, x.flip(-1), 2)
    offsets = [p[0] if p else m[0] for p, m in zip(plain, mirrored, strict=True)]
    assert all(len(p) + len(m) == 1 for p, m in zip(plain, mirrored, strict=True))
    assert sum(bool(m) for m in mirrored) > 100
    assert {a for a, _ in offsets} | {b for _, b in offsets} == {0, 1, 2, 3}


def test_mixup_mixes_each_example_with_the_reversed_batch_and_its_label_alike():
    x = torch.randn(7, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    out, soft = Augmentation(mixup=True)(x, y, 10, data_seed=2, t=3)
    assert soft.shape == (7, 10) and soft.dtype == x.dtype
    torch.testing.assert_close(soft.sum(1), torch.ones(7, dtype=torch.float64))
    for i in range(7):
        j = 6 - i
        lam = soft[i, y[i]] if i != j else torch.tensor(1.0, dtype=torch.float64)
        assert 0 <= lam <= 1
        torch.testing.assert_close(out[i], lam * x[i] + (1 - lam) * x[j])
        if i != j:
            assert soft[i, y[j]] == pytest.approx(1 - float(lam), abs=1e-15)
    torch.testing.assert_close(out[3], x[3])  # the middle of an odd batch: with itself


def test_mixup_weights_are_uniform():
    x, y = torch.zeros(4000, 1, dtype=torch.float64), torch.zeros(4000, dtype=torch.long)
    y[::2] = 1  # pairs i, B-1-i then have different labels: lambda is soft[i, y[i]]
    _, soft = Augmentation(mixup=True)(x, y, 2, data_seed=0, t=1)
    lam = soft[torch.arange(4000), y]
    assert float(lam.mean()) == pytest.approx(0.5, abs=0.02)  # U(0, 1): mean 1/2,
    assert float(lam.var()) == pytest.approx(1 / 12, abs=0.01)  # variance 1/12


def test_an_updates_augmentation_is_a_pure_function_of_data_seed_and_update():
    aug = Augmentation(flip=True, crop_padding=1, mixup=True)
    x, y = _batch(32)
    first = aug(x, y, 10, data_seed=4, t=9)
    assert all(torch.equal(a, b) for a, b in zip(first, aug(x, y, 10, 4, 9), strict=True))
    assert not torch.equal(first[0], aug(x, y, 10, 4, 10)[0])
    assert not torch.equal(first[0], aug(x, y, 10, 5, 9)[0])
    # each transform draws its own stream: switching mixup off leaves flip and crop alone
    no_mix = Augmentation(flip=True, crop_padding=1)(x, y, 10, 4, 9)[0]
    lam = first[1][torch.arange(32), y]
    rebuilt = lam.view(-1, 1, 1, 1) * no_mix + (1 - lam.view(-1, 1, 1, 1)) * no_mix.flip(0)
    torch.testing.assert_close(first[0][:16], rebuilt[:16])


# --------------------------------------------------------------------------- losses

TINY = {
    "model": {"name": "fcn", "width": 8, "depth": 3},
    "dataset": {"name": "digits", "train_size": 48, "test_size": 16},
    "num_steps": 4,
    "batch_size": 16,
    "eta_trgt": 0.05,
    "dtype": "float64",
    "device": "cpu",
    "stuck_accuracy_factor": 0.01,
}


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_soft_labels_losses_and_the_official_accuracy(loss):
    problem = Problem(TrialConfig.model_validate({**TINY, "loss": loss}))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    soft = torch.softmax(torch.randn(5, 10, generator=gen, dtype=torch.float64), -1)
    got, accuracy = problem.loss_and_accuracy(logits, soft)
    if loss == "xent":
        want = -(soft * torch.log(torch.exp(logits) / torch.exp(logits).sum(1, True))).sum(1)
    else:
        want = 0.5 * ((logits - soft) ** 2).sum(1)
    assert float(got) == pytest.approx(float(want.mean()), rel=1e-12)
    hits = [int(logits[i].argmax()) == int(soft[i].argmax()) for i in range(5)]
    assert float(accuracy) == pytest.approx(sum(hits) / 5)
    # one-hot soft labels give the hard-label loss
    labels = torch.tensor([1, 0, 9, 4, 4])
    hard = problem.loss_and_accuracy(logits, labels)
    one_hot = problem.loss_and_accuracy(logits, F.one_hot(labels, 10).double())
    assert float(one_hot[0]) == pytest.approx(float(hard[0]), rel=1e-12)
    assert float(one_hot[1]) == float(hard[1])


AUGMENT = {"augment_flip": True, "augment_crop_padding": 2, "augment_mixup": True}


def test_a_trial_trains_on_its_augmented_batches_and_evaluates_clean_data():
    config = TrialConfig.model_validate({**TINY, **AUGMENT, "loss": "xent", "eval_every": 1})
    problem = Problem(config)
    assert problem.x_train.shape[1:] == (1, 8, 8)  # digits as images for the flip and crop
    model = problem.build_model(config.init_seed)
    params = dict(model.named_parameters())
    idx = problem.batch(1)
    x, soft = Augmentation(True, 2, True)(problem.x_train[idx], problem.y_train[idx], 10, 0, 1)
    with torch.no_grad():
        logits = functional_call(model, params, (x,))
    want = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    result = run_trial(config)
    assert result.steps["train_loss"][0] == pytest.approx(float(want), rel=1e-12)
    plain = run_trial(TrialConfig.model_validate({**TINY, "loss": "xent"}))
    assert plain.steps["train_loss"][0] != pytest.approx(result.steps["train_loss"][0])
    # at update 1 the parameters are the same: the test evaluation sees the clean images
    with torch.no_grad():
        clean = problem.loss_and_accuracy(
            functional_call(model, params, (problem.x_test,)), problem.y_test
        )
    assert result.steps["test_loss"][0] == pytest.approx(float(clean[0]), rel=1e-12)


def _top(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh((matrix + matrix.T) / 2)[-1])


def test_lambda0_is_the_mean_sharpness_over_augmented_training_batches():
    config = TrialConfig.model_validate(
        {
            **TINY,
            **AUGMENT,
            "loss": "xent",
            "num_steps": 1,
            "sharpness_every": 1,
            "sharpness_batch": "current",
            "lambda0_batches": 2,
            "sharpness_tol": 1e-10,
            "sharpness_max_iter": 400,
        }
    )
    problem = Problem(config)
    model = problem.build_model(config.init_seed)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    tops = []
    for t in (1, 2):
        idx = problem.batch(t)
        x, soft = Augmentation(True, 2, True)(problem.x_train[idx], problem.y_train[idx], 10, 0, t)

        def loss(v: torch.Tensor, x=x, soft=soft) -> torch.Tensor:
            parts = v.split(sizes)
            params = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
            logits = functional_call(model, params, (x,))
            return -(soft * logits.log_softmax(-1)).sum(-1).mean()

        tops.append(_top(torch.autograd.functional.hessian(loss, flat)))
    result = run_trial(config)
    assert result.summary["lambda0"] == pytest.approx(sum(tops) / 2, rel=1e-7)
    assert result.steps["sharpness"][0] == pytest.approx(tops[0], rel=1e-7)


# --------------------------------------------------------------------------- packing

PACK = {
    "model": {"name": "fcn", "width": 16, "depth": 3},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "loss": "xent",
    "num_steps": 12,
    "batch_size": 32,
    "sharpness_every": 3,
    "sharpness_batch": "current",
    "lambda0_batches": 2,
    "sharpness_tol": 1e-10,
    "sharpness_max_iter": 200,
    "eval_every": 4,
    "dtype": "float64",
    "device": "cpu",
    **AUGMENT,
}


def test_packed_members_draw_the_augmented_batches_they_draw_alone():
    configs = [
        TrialConfig.model_validate({**PACK, **changes})
        for changes in (
            {"eta_trgt": 1e4},  # diverges at once: a waiting member takes its slot
            {"eta_trgt": 0.5, "warmup_steps": 4, "init_seed": 1},
            {"eta_trgt": 0.01, "optimizer": {"name": "adam"}, "init_seed": 2},
            {"eta_trgt": 0.01, "optimizer": {"name": "radam"}, "init_seed": 3},
        )
    ]
    # two slots: rows train at different updates, each on its own augmented batch
    packed = run_pack(configs, slots=2)
    assert packed[0].status == "diverged" and packed[0].summary["diverged_step"] < 12
    for config, got in zip(configs, packed, strict=True):
        alone = run_trial(config)
        assert got.status == alone.status
        for column in ("lr", "train_loss", "train_accuracy", "test_loss"):
            g, w = got.steps[column], alone.steps[column]
            assert [v is None for v in g] == [v is None for v in w], column
            assert [v for v in g if v is not None] == pytest.approx(
                [v for v in w if v is not None], rel=1e-9
            ), column
        for column in ("sharpness", "preconditioned_sharpness"):
            g, w = got.steps[column], alone.steps[column]
            assert [v is None for v in g] == [v is None for v in w], column
            assert [v for v in g if v is not None] == pytest.approx(
                [v for v in w if v is not None], rel=1e-8
            ), column


def test_flip_and_crop_need_images_mixup_does_not():
    mnist1d = {**TINY, "dataset": {"name": "mnist1d", "train_size": 64, "test_size": 32}}
    with pytest.raises(ValueError, match="augment_flip, augment_crop_padding"):
        Problem(TrialConfig.model_validate({**mnist1d, "augment_flip": True}))
    result = run_trial(TrialConfig.model_validate({**mnist1d, "augment_mixup": True}))
    assert result.status in ("completed", "stuck")
