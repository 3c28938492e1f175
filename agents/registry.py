"""Controller names → factories: ``make_controller(name, env) -> Controller``.

``BASELINES`` are the rule-based and forecast controllers (observation only) that run the model on
the device; ``SPLIT_BASELINES`` the rules that also offload to a split server; ``ORACLE`` is the
offline upper bound (knows the whole trace). ``ALL_CONTROLLERS = BASELINES + SPLIT_BASELINES + [ORACLE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

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
from agents.oracle import ChargerBlindOracle, ForesightFreeOracle, HazardOracle, OracleController
from agents.placement_baselines import QeilGreedyController
from agents.split_baselines import (
    AllServerController,
    JointSplitController,
    neurosurgeon_energy,
    neurosurgeon_latency,
)

FACTORIES: dict[str, Callable[..., Controller]] = {
    "random": RandomController,
    "static-largest": static_largest,
    "static-smallest": static_smallest,
    "static-fit": static_fit,
    "battery-ladder": BatteryLadderController,
    "greedy-budget": GreedyBudgetController,
    "schedutil": SchedutilController,
    "mpc": ForecastMPC,
    "all-server": AllServerController,
    "neurosurgeon-latency": neurosurgeon_latency,
    "neurosurgeon-energy": neurosurgeon_energy,
    "joint-split": JointSplitController,
    "qeil-greedy": QeilGreedyController,
    "oracle": OracleController,
    # the oracle held to the env's action masks: the best a masked policy can reach (agents.oracle)
    "oracle-masked": partial(OracleController, masked=True),
    # the oracle without foresight of chargers: an expert to imitate that knows what a device knows of the next
    # plug-in (agents.oracle.ChargerBlindOracle)
    "oracle-charger-blind": ChargerBlindOracle,
    # ... and of the session's end: a reference for the deaths that control, not foresight, would avoid
    # (agents.oracle.ForesightFreeOracle)
    "oracle-blind": ForesightFreeOracle,
    # ... weighing the chance that the session ends, at the rate the env's own sessions end: an expert a device could
    # follow (agents.oracle.HazardOracle)
    "oracle-hazard": HazardOracle,
}
#: the split-aware rules (agents.split_baselines): each is the schedutil rule on a profile without split
SPLIT_BASELINES: list[str] = ["all-server", "neurosurgeon-latency", "neurosurgeon-energy", "joint-split"]
#: the placement-aware rules (agents.placement_baselines): each is the schedutil rule on a profile without placement
PLACE_BASELINES: list[str] = ["qeil-greedy"]
ORACLE = "oracle"
ORACLE_MASKED = "oracle-masked"
ORACLE_CHARGER_BLIND = "oracle-charger-blind"
ORACLE_BLIND = "oracle-blind"
ORACLE_HAZARD = "oracle-hazard"
#: the oracles: they plan with the trace and act from the env's true state (all take a grid)
ORACLES: tuple[str, ...] = (ORACLE, ORACLE_MASKED, ORACLE_CHARGER_BLIND, ORACLE_BLIND, ORACLE_HAZARD)
RANDOM = "random"
#: the references a score is measured against, not heuristics: the oracles and random
REFERENCES: tuple[str, ...] = (*ORACLES, RANDOM)
BASELINES: list[str] = [n for n in FACTORIES if n not in ORACLES
                        and n not in SPLIT_BASELINES + PLACE_BASELINES]
ALL_CONTROLLERS: list[str] = BASELINES + SPLIT_BASELINES + PLACE_BASELINES + list(ORACLES)


def default_controllers(costs) -> list[str]:
    """The controllers an evaluation runs by default: the split rules only for a profile with split
    configurations, the placement rules only for one with placements (elsewhere each is the schedutil
    rule again). The masked, charger-blind and foresight-free oracles only when asked for (``--policies``): each
    costs a second oracle's planning."""
    has_split = bool(np.asarray(getattr(costs, "offload", [0])).any())
    has_place = bool(getattr(costs, "has_place", False))
    return [n for n in ALL_CONTROLLERS if (has_split or n not in SPLIT_BASELINES)
            and (has_place or n not in PLACE_BASELINES)
            and n not in (ORACLE_MASKED, ORACLE_CHARGER_BLIND, ORACLE_BLIND, ORACLE_HAZARD)]


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


__all__ = ["ALL_CONTROLLERS", "BASELINES", "SPLIT_BASELINES", "default_controllers",
           "FACTORIES", "ORACLE", "ORACLE_BLIND", "ORACLE_CHARGER_BLIND", "ORACLE_HAZARD", "ORACLE_MASKED",
           "ORACLES", "RANDOM", "REFERENCES", "make_controller"]
