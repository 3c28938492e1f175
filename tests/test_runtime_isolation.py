"""runtime/ imports numpy and the standard library only: torch, gymnasium and SB3 are blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from test_runtime_manager import make_policy

REPO = Path(__file__).resolve().parent.parent

BLOCKER = """
import sys
class _Block:
    BLOCKED = ("torch", "gymnasium", "gym", "stable_baselines3", "sb3_contrib", "envs", "agents", "model",
               "matplotlib", "scipy", "pandas")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"blocked in the runtime isolation test: {name}")
        return None
sys.meta_path.insert(0, _Block())
"""


def test_runtime_runs_with_heavy_packages_blocked(tmp_path: Path) -> None:
    policy = make_policy(tmp_path / "p.npz")
    trace = REPO / "traces" / "data" / "default" / "phone-00.csv"
    code = BLOCKER + textwrap.dedent(f"""
        import runtime, runtime.observation, runtime.rules, runtime.meters
        import runtime.policy, runtime.sensors, runtime.shield, runtime.replay, runtime.manager
        import runtime.placement, runtime.hardware
        import traces  # the replay sensors' trace loader is numpy + stdlib too
        from runtime.manager import RuntimeManager
        from runtime.policy import load_policy_file
        from runtime.dynamics import DeviceConstants
        from runtime.replay import ReplaySensors
        from runtime.sensors import SensorHub, live_sensors
        pf = load_policy_file({str(policy)!r})
        tr = traces.load_trace({str(trace)!r})
        rp = ReplaySensors(tr, DeviceConstants.from_dict(pf.meta["mask_rules"]["devices"]["phone"]), clock=None)
        mgr = RuntimeManager(pf, SensorHub([rp], clock=rp.now), clock=rp.now)
        for k in range(1, 500):
            rp.advance_to(k * 1.0)
            a = mgr.decide(k * 1.0)
        assert 0 <= a < pf.n_actions
        SensorHub(live_sensors(power_fn=lambda: 1.0)).poll()
        heavy = [m for m in sys.modules if m.split(".")[0] in _Block.BLOCKED]
        assert not heavy, heavy
        print("ok", sorted(m for m in sys.modules if m.startswith("runtime")))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok")
    for mod in ("runtime.policy", "runtime.sensors", "runtime.manager", "runtime.replay", "runtime.shield",
                "runtime.placement", "runtime.hardware"):
        assert mod in res.stdout
