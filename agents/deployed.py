"""Score what is deployed: an exported ``policy.npz`` driven through the runtime manager, in the environment.

``DeployedPolicy(path, shield=True)`` is a controller (SB3's ``predict``) whose every decision is
``runtime.manager.RuntimeManager.decide``: the device's observation builder (from sensor fields, not the
env's observation), the numpy forward pass, the shield's masks and hard limits, the emergency state machine
and the dwell rule — the code ``deploy.py run`` runs. Each step the environment's state is what the
device would sense (``MicroLLMPowerEnv.device_view``: SoC, temperature, plug, power, supply, link, demand,
backlog, the trace's budget and deadline, processors down), fed through a sensor hub on the env's clock.

``shield=False`` runs the same manager with ``ManagerConfig.shield`` off: the policy's own choice every
step, no masks, no emergency hold, no dwell — what the shield is worth is the difference.

``python -m agents.evaluate --policy policy.npz`` reports both beside the baselines (``docs/agents.md``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from runtime.sensors import Reading, Sensor

_FIELDS = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w", "supply_w", "bandwidth_mbps")


class EnvSensor(Sensor):
    """Every physical field of the device, read from the environment's current state."""

    name = "env"
    provides = _FIELDS

    def __init__(self, env) -> None:
        self.env = env
        self.view: dict[str, Any] = {}
        super().__init__(clock=lambda: self.view.get("t_s", 0.0))

    def refresh(self) -> dict[str, Any]:
        self.view = self.env.device_view()
        return self.view

    def read(self) -> Reading:
        v = self.view
        return Reading(v["t_s"], **{f: v[f] for f in _FIELDS})


class DeployedPolicy:
    """An exported policy file, deciding through a fresh ``RuntimeManager`` per episode (module docstring).

    Args:
        path: The ``policy.npz`` (``deploy.py export``).
        shield: Keep the shield, the emergency state machine and the dwell rule (False: the policy alone).
        min_dwell_decisions: The dwell rule's decisions between two policy-driven switches (``deploy.py run``'s
            default, 3).
        name: Its name in a report.
    """

    uses_masks = False  # the manager builds its own masks (the shield); the env's are not read

    def __init__(self, path: str | Path, shield: bool = True, min_dwell_decisions: int = 3,
                 name: str | None = None) -> None:
        from runtime.policy import load_policy_file

        self.path = str(path)
        self.pf = load_policy_file(path)
        self.shield = bool(shield)
        self.min_dwell = int(min_dwell_decisions)
        self.name = name or f"policy:{Path(path).name}{'' if shield else ' (unshielded)'}"
        self.env = None
        self.mgr = None
        self.overrides: dict[str, int] = {}

    def bind(self, env) -> None:
        base = env.unwrapped
        if list(base.space.names) != list(self.pf.names):
            raise ValueError(f"{self.path}: the policy's {len(self.pf.names)} configurations are not the "
                             f"environment's {len(base.space.names)}; "
                             "fix: evaluate with the profile it was exported with (--profile)")
        if base.layout.names != self.pf.layout.names:
            raise ValueError(f"{self.path}: the policy reads {len(self.pf.layout.names)} observation features, the "
                             f"environment builds {len(base.layout.names)}; fix: evaluate under the policy's own "
                             "environment parameters (agents.evaluate --policy does)")
        self.env = base

    def _new_manager(self) -> None:
        from runtime.manager import ManagerConfig, RuntimeManager
        from runtime.sensors import SensorHub

        self.sensor = EnvSensor(self.env)
        v = self.sensor.refresh()
        clock = self.sensor.clock
        hub = SensorHub([self.sensor], clock=clock, hold_s=math.inf, stale_after_s=math.inf,
                        freeze_after_s={}, read_deadline_s=0.0)
        cfg = ManagerConfig(min_dwell_decisions=self.min_dwell, capacity_wh=v["capacity_j"] / 3600.0,
                            shield=self.shield, saver_s=self.env.params.saver_s,  # the env's battery saver too
                            saver_to_deadline=self.env.params.saver_to_deadline,
                            saver_floor_frac=self.env.params.saver_floor_frac,
                            floor_rule=self.env.params.floor_rule, budget_rule=self.env.params.budget_rule)
        self.mgr = RuntimeManager(self.pf, hub, cfg, device=v["device"], clock=clock, device_kind=v["device_kind"])
        self.mgr.start_at(int(self.env.sim_state()["config"]))  # the episode's starting configuration
        if self.mgr.layout.goal or v["objective"] != "max-quality":
            self.mgr.set_objective(v["objective"], budget_w=v["budget_w"],
                                   quality_floor=v["quality_floor"] if v["objective"] == "min-energy" else math.nan,
                                   deadline_s=(v["t_s"] + v["deadline_left_s"]) if math.isfinite(v["deadline_left_s"])
                                   else (v["t_s"] + v["horizon_left_s"]))

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True, action_masks=None):
        if self.env is None:
            raise RuntimeError("DeployedPolicy: bind(env) first (agents.evaluate does)")
        if self.mgr is None or (episode_start is not None and bool(np.asarray(episode_start).reshape(-1)[0])):
            self._new_manager()
        v = self.sensor.refresh()
        mgr = self.mgr
        mgr.set_workload(demand_tps=v["demand_tps"], backlog_frac=v["backlog_frac"],
                         latency_over_slo=v["latency_over_slo"], budget_w=v["budget_w"],
                         deadline_left_s=v["deadline_left_s"], horizon_left_s=v["horizon_left_s"], base_w=v["base_w"],
                         stored_energy_j=v["soc_frac"] * v["capacity_j"], capacity_j=v["capacity_j"],
                         supply_ahead_w=v["supply_ahead_w"])
        mgr.procs_down = v["procs_down"]
        a = mgr.decide(v["t_s"])
        return np.array([a]), state

    def summary(self) -> dict[str, Any]:
        return self.mgr.summary() if self.mgr is not None else {}
