"""Beta grows stepwise under continuation and stays put without it."""
import pytest

from model.continuation import ContinuationSchedule, FixedBeta


def test_beta_follows_the_paper_schedule():
    schedule = ContinuationSchedule()
    assert schedule.beta_at(0) == 1.0
    assert schedule.beta_at(199) == 1.0
    assert schedule.beta_at(200) == pytest.approx((1 + 0.005 * 200) ** 0.5)
    assert schedule.beta_at(10_123) == pytest.approx((1 + 0.005 * 10_000) ** 0.5)


def test_beta_is_non_decreasing_and_grows():
    schedule = ContinuationSchedule(step=10, gamma=0.1)
    betas = [schedule.beta_at(i) for i in range(100)]
    assert all(a <= b for a, b in zip(betas, betas[1:]))
    assert betas[-1] > 3 * betas[0]
    assert len(set(betas)) == 10


def test_fixed_beta_never_changes():
    schedule = FixedBeta(2.5)
    assert {schedule.beta_at(i) for i in (0, 200, 10_000)} == {2.5}


def test_step_must_be_positive():
    with pytest.raises(ValueError):
        ContinuationSchedule(step=0)
