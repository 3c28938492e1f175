"""Controller names → factories: ``make_controller(name, env) -> Controller``.

``BASELINES`` are the rule-based and forecast controllers (observation only); ``ORACLE`` is the
offline upper bound (knows the whole trace). ``ALL_CONTROLLERS = BASELINES + [ORACLE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Controller
from agents.baselines import (
    BatteryLadderController,
    GreedyBudgetController,
    RandomController,
    SchedutilController,
    static_fit,
    static_largest,
    static_smallest,
)
from agents.mpc import ForecastMPC
from agents.oracle import OracleController

FACTORIES: dict[str, Callable[..., Controller]] = {
    "random": RandomController,
    "static-largest": static_largest,
    "static-smallest": static_smallest,
    "static-fit": static_fit,
    "battery-ladder": BatteryLadderController,
    "greedy-budget": GreedyBudgetController,
    "schedutil": SchedutilController,
    "mpc": ForecastMPC,
    "oracle": OracleController,
}
ORACLE = "oracle"
RANDOM = "random"
BASELINES: list[str] = [n for n in FACTORIES if n != ORACLE]
ALL_CONTROLLERS: list[str] = BASELINES + [ORACLE]


def make_controller(name: str, env, **kwargs: Any) -> Controller:
    """Build controller ``name`` for ``env`` (a ``MicroLLMPowerEnv``, wrappers allowed).

    Args:
        name: One of ``ALL_CONTROLLERS``.
        env: The env whose cost tables / traces the controller reads; controllers that need the
            true env state (``oracle``) or the device model (``mpc``) act on it until ``bind``.
        **kwargs: Passed to the factory (e.g. ``seed`` for random, ``n_soc`` for the oracle).
    """
    if name not in FACTORIES:
        raise KeyError(f"unknown controller {name!r}; choose from {ALL_CONTROLLERS}")
    ctrl = FACTORIES[name](env, **kwargs)
    ctrl.name = name
    return ctrl


__all__ = ["ALL_CONTROLLERS", "BASELINES", "FACTORIES", "ORACLE", "RANDOM", "make_controller"]
