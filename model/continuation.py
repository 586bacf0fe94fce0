"""Beta schedules for the continuation tanh(beta * z) -> sign(z).

The trainer asks `beta_at(iteration)`; swapping the schedule object is how
the "no continuation" ablation is expressed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class BetaSchedule(Protocol):
    def beta_at(self, iteration: int) -> float: ...


@dataclass(frozen=True)
class ContinuationSchedule:
    """HashNet's schedule: beta = init * (1 + gamma * t) ** power, with t the
    iteration rounded down to a multiple of `step` (beta changes every `step`
    iterations, as in the paper's code)."""

    step: int = 200
    gamma: float = 0.005
    power: float = 0.5
    init: float = 1.0

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")

    def beta_at(self, iteration: int) -> float:
        stage_start = iteration - iteration % self.step
        return self.init * (1.0 + self.gamma * stage_start) ** self.power


@dataclass(frozen=True)
class FixedBeta:
    """No continuation: the activation stays tanh(beta * z) throughout."""

    beta: float = 1.0

    def beta_at(self, iteration: int) -> float:
        return self.beta
