import math

import pytest
import torch

from warmup_core.schedules import Schedule, learning_rate


def test_linear_warmup_matches_formula_at_boundaries():
    kw = dict(eta_trgt=0.8, warmup_steps=4, eta_init=0.0)
    assert learning_rate(1, **kw) == pytest.approx(0.2)
    assert learning_rate(2, **kw) == pytest.approx(0.4)
    assert learning_rate(4, **kw) == pytest.approx(0.8)
    assert learning_rate(5, **kw) == pytest.approx(0.8)
    assert learning_rate(1000, **kw) == pytest.approx(0.8)


def test_warmup_of_one_step_means_no_warmup():
    assert learning_rate(1, eta_trgt=0.3, warmup_steps=1) == pytest.approx(0.3)


def test_linear_warmup_from_nonzero_init():
    kw = dict(eta_trgt=1.0, warmup_steps=10, eta_init=0.5)
    assert learning_rate(5, **kw) == pytest.approx(0.5 + 0.5 * 0.5)
    assert learning_rate(10, **kw) == pytest.approx(1.0)


def test_polynomial_warmup_generalizes_the_exponent():
    kw = dict(eta_trgt=1.0, warmup_steps=10, shape="polynomial", power=2.0)
    assert learning_rate(5, **kw) == pytest.approx(0.25)
    assert learning_rate(10, **kw) == pytest.approx(1.0)


def test_catapult_warmup_starts_at_eta_c_and_caps_at_target():
    kw = dict(eta_trgt=1.0, warmup_steps=10, eta_init=0.4, shape="catapult")
    assert learning_rate(1, **kw) == pytest.approx(0.4 + 0.1)
    assert learning_rate(5, **kw) == pytest.approx(0.9)
    assert learning_rate(6, **kw) == pytest.approx(1.0)  # 0.4 + 0.6 capped
    assert learning_rate(10, **kw) == pytest.approx(1.0)


def test_cosine_decay_reaches_eta_min_at_the_last_step():
    kw = dict(eta_trgt=1.0, warmup_steps=10, decay="cosine", num_steps=110, eta_min=0.1)
    assert learning_rate(10, **kw) == pytest.approx(1.0)
    assert learning_rate(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(110, **kw) == pytest.approx(0.1)
    assert learning_rate(11, **kw) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 100)) / 2)


def test_linear_decay_is_linear_after_warmup():
    kw = dict(eta_trgt=1.0, warmup_steps=1, decay="linear", num_steps=11)
    assert learning_rate(1, **kw) == pytest.approx(1.0)
    assert learning_rate(6, **kw) == pytest.approx(0.5)
    assert learning_rate(11, **kw) == pytest.approx(0.0)


def test_tensor_arguments_schedule_many_trials_at_once():
    eta = torch.tensor([0.1, 0.2, 0.4])
    warm = torch.tensor([1, 4, 16])
    for step in (1, 2, 4, 16, 20):
        got = learning_rate(step, eta_trgt=eta, warmup_steps=warm, decay="cosine", num_steps=40)
        for i in range(3):
            want = learning_rate(
                step,
                eta_trgt=float(eta[i]),
                warmup_steps=int(warm[i]),
                decay="cosine",
                num_steps=40,
            )
            assert float(got[i]) == pytest.approx(want, rel=1e-6)


def test_tensor_of_steps_gives_the_whole_curve():
    steps = torch.arange(1, 9)
    curve = learning_rate(steps, eta_trgt=1.0, warmup_steps=4)
    assert curve.tolist() == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(eta_trgt=1.0, warmup_steps=0), "warmup_steps"),
        (dict(eta_trgt=-1.0), "eta_trgt"),
        (dict(eta_trgt=1.0, shape="cubic"), "warmup_shape"),
        (dict(eta_trgt=1.0, decay="step"), "decay"),
        (dict(eta_trgt=1.0, decay="cosine"), "num_steps"),
        (dict(eta_trgt=1.0, decay="cosine", num_steps=9, decay_power=-1.0), "decay_power"),
        (dict(eta_trgt=1.0, decay="linear", num_steps=9, decay_power=2.0), "decay_power"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Schedule(**kwargs)


@pytest.mark.parametrize(
    ("kw", "end"),
    [
        (dict(eta_trgt=1.0, warmup_steps=10), 10),
        (dict(eta_trgt=1.0, warmup_steps=10, shape="polynomial"), 10),
        (dict(eta_trgt=1.0, warmup_steps=1), 1),
        # 0.4 + t / 10 reaches 1 at t = 6 (the cap of the catapult ramp).
        (dict(eta_trgt=1.0, warmup_steps=10, eta_init=0.4, shape="catapult"), 6),
    ],
)
def test_warmup_end_step_is_the_first_update_at_the_target(kw, end):
    assert Schedule(**kw).end_step == end


# -- the official code's schedule (Kalra & Barkeshli, `schedules_utils`) ---------------
#
# Its loop index s = 0 .. N-1 is update t = s + 1. With eta_init = 0 and k = 1:
#   warmup, s < T: min(eta, eta * (s + 1) / T)
#   decay, s >= T: eta_min + (eta - eta_min) * (0.5 * (1 + cos(pi * x))) ** p,
#                  x = (s - T + 2) / (N - T + 1),  eta_min = eta / 10.
# The numbers below are that formula evaluated by hand (eta = 0.08192, N = 100000, p = 1).

OFFICIAL = {
    1024: {
        0: 8.0e-5,  # eta / 1024
        1: 1.6e-4,
        1022: 0.08184,
        1023: 0.08192,  # the last warmup step runs at eta
        1024: 0.0819199999257214,
        1025: 0.0819199998328732,
        50510: 0.0450565850433514,
        99998: 0.0081920000185696,
        99999: 0.008192,  # x = 1: eta_min
    },
    1: {
        0: 0.08192,
        1: 0.0819199999272334,
        50000: 0.0450548418832844,
        99999: 0.008192,
    },
}


@pytest.mark.parametrize("warmup", sorted(OFFICIAL))
def test_official_warmup_and_cosine_to_a_tenth_of_the_target(warmup):
    eta, n = 0.08192, 100_000
    schedule = Schedule(
        eta_trgt=eta,
        warmup_steps=warmup,
        decay="cosine",
        num_steps=n,
        eta_min=0.1,
        eta_min_relative=True,
    )
    # The official cosine runs one step ahead (x above vs (t - T) / (N - T) here); the
    # rates differ by less than one update of progress: (eta - eta_min) * pi / (2 (N - T + 1)).
    one_update = (eta - eta / 10) * math.pi / (2 * (n - warmup + 1))
    for s, official in OFFICIAL[warmup].items():
        ours = schedule(s + 1)
        if s < warmup or s == n - 1:  # warmup and the last update: the same formula
            assert ours == pytest.approx(official, rel=1e-12, abs=0)
        else:
            assert abs(ours - official) < one_update, s


def test_decay_power_zero_keeps_the_target_and_two_squares_the_cosine():
    kw = dict(eta_trgt=1.0, warmup_steps=1, decay="cosine", num_steps=101, eta_min=0.2)
    assert [learning_rate(t, decay_power=0.0, **kw) for t in (2, 51, 101)] == [1.0, 1.0, 1.0]
    # Halfway (s = 1/2) the cosine factor is 1/2: p = 2 makes it 1/4.
    assert learning_rate(51, decay_power=2.0, **kw) == pytest.approx(0.2 + 0.8 * 0.25)
    assert learning_rate(101, decay_power=2.0, **kw) == pytest.approx(0.2)


def test_relative_eta_min_is_a_fraction_of_each_members_target():
    eta = torch.tensor([0.1, 1.0])
    kw = dict(eta_trgt=eta, warmup_steps=1, num_steps=11, eta_min=0.1, eta_min_relative=True)
    assert Schedule(decay="cosine", **kw)(11).tolist() == pytest.approx([0.01, 0.1])
    assert Schedule(decay="linear", **kw)(6).tolist() == pytest.approx([0.055, 0.55])
