"""TV-L1's parameters: OpenCV's names and defaults, and the fixed-iteration schedule for datasets.

Their own module so that both solvers (`flow.tvl1`'s PyTorch one and `flow.tvl1_triton`'s fused one)
read them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from mateffnet.config import TVL1_SCHEDULES
from mateffnet.errors import MateffnetError

TVL1_FAST = TVL1_SCHEDULES["fast"]  # the fixed schedule prepare uses by default (config.TVL1_SCHEDULES)


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV's `DualTVL1OpticalFlow` parameters, with OpenCV's defaults (names in snake case)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def __post_init__(self):
        checks = {
            "tau": self.tau > 0,
            "lambda_": self.lambda_ > 0,
            "theta": self.theta > 0,
            "nscales": self.nscales >= 1,
            "warps": self.warps >= 1,
            "epsilon": self.epsilon >= 0,
            "inner_iterations": self.inner_iterations >= 1,
            "outer_iterations": self.outer_iterations >= 1,
            "scale_step": 0 < self.scale_step < 1,
            "gamma": self.gamma >= 0,
            "median_filtering": self.median_filtering in (0, 1, 3, 5),
        }
        for name, ok in checks.items():
            if not ok:
                expected = {
                    "epsilon": ">= 0",
                    "gamma": ">= 0",
                    "scale_step": "in (0, 1)",
                    "median_filtering": "0 or 1 (off), 3 or 5",
                }.get(name, "> 0" if isinstance(getattr(self, name), float) else ">= 1")
                raise MateffnetError(f"TV-L1 parameter {name}={getattr(self, name)!r}; expected {expected}")
