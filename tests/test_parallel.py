"""--workers N: oracle demonstrations and evaluation as Ray tasks give exactly the serial results; --workers 1
never imports Ray; a missing Ray is a clear error that names the install command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agents.evaluate import evaluate_controllers
from agents.imitation import collect, student_fn
from agents.registry import ALL_CONTROLLERS, ORACLES, make_controller
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from traces.schema import TraceMeta, make_trace

REPO = Path(__file__).resolve().parent.parent
PROFILE = example_profile(12)
ORACLE_GRID = {"n_soc": 51, "n_temp": 13, "n_backlog": 5}  # a coarser oracle: the same code, faster


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray runtime with 2 CPUs (``address="local"``: never another cluster on this host)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]'); --workers > 1 "
                                            "needs it")
    from agents.parallel import init_ray

    init_ray(num_cpus=2)  # ray.init(address="local", num_cpus=2, include_dashboard=False, ...), unless already up
    # the workers cannot import this test module: ship its functions (env factories, _square) by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _trace(n, name, *, supply_w=0.0, ambient_c=25.0, demand_tps=20.0, capacity_wh=10.0, soc=1.0, budget_w=None):
    meta = TraceMeta(capacity_wh=capacity_wh, initial_soc=soc, device_kind="phone", source="test",
                     license="CC0-1.0", unit=name)
    plugged = (np.asarray(supply_w) > 0).astype(float) if np.ndim(supply_w) else float(supply_w > 0)
    return make_trace(name, meta, np.arange(n) * 10.0, supply_w=supply_w, plugged=plugged, ambient_c=ambient_c,
                      demand_tps=demand_tps, bandwidth_mbps=10.0, budget_w=budget_w)


def tiny_traces():
    """Three 40-row traces: bursty demand, hot and nearly empty, a budget with supply for the first half."""
    rng = np.random.default_rng(1)
    n = 40
    return [_trace(n, "bursty", demand_tps=rng.uniform(0, 120, n)),
            _trace(n, "hot-low", ambient_c=41.0, demand_tps=60.0, capacity_wh=0.2, soc=0.6),
            _trace(n, "budget", supply_w=np.where(np.arange(n) < 20, 8.0, 0.0), demand_tps=40.0, budget_w=1.0)]


def tiny_env(**kw):
    return MicroLLMPowerEnv(profile=PROFILE, traces=tiny_traces(), **kw)


def _same(a, b) -> None:
    for f in ("obs", "masks", "labels", "rewards"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.episode_ends == b.episode_ends
    assert a.expert_return == b.expert_return or (np.isnan(a.expert_return) and np.isnan(b.expert_return))


def test_oracle_demonstrations_and_dagger_are_identical_on_two_workers(ray_local):
    serial = collect(tiny_env(), "oracle", 5, seed=3, max_steps=40, progress=False)
    parallel = collect(tiny_env(), "oracle", 5, seed=3, max_steps=40, progress=False, workers=2)
    _same(serial, parallel)
    assert len(serial) > 5 * 10 and len(serial.episode_ends) == 5
    # DAgger: a (random, untrained) student drives half the steps; its policy and normalisation travel to the
    # workers, and every episode draws its coin from its own stream
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    vn = VecNormalize(DummyVecEnv([tiny_env]), gamma=0.99)
    model = MaskablePPO("MlpPolicy", vn, n_steps=64, batch_size=64, seed=0, device="cpu")
    vn.obs_rms.mean = serial.obs.mean(axis=0)
    kw = dict(seed=4, max_steps=40, progress=False, student=student_fn(model, vn), beta=0.5)
    d1 = collect(tiny_env(), "schedutil", 6, **kw)
    d2 = collect(tiny_env(), "schedutil", 6, workers=2, **kw)
    _same(d1, d2)
    assert np.isnan(d1.expert_return) and (d1.labels != d2.labels).sum() == 0


def test_evaluation_is_identical_on_two_workers(ray_local):
    ctrls = {n: (lambda env, n=n: make_controller(n, env, **(ORACLE_GRID if n in ORACLES else {})))
             for n in ALL_CONTROLLERS}

    def factory():
        return tiny_env(random_start=False)

    a = evaluate_controllers(factory, ctrls, max_steps=40, seed=7, record=True, progress=False)
    b = evaluate_controllers(factory, ctrls, max_steps=40, seed=7, record=True, progress=False, workers=2)
    for name in ALL_CONTROLLERS:  # random draws from one generator across episodes: it must still match
        assert [e["return"] for e in a["per_episode"][name]] == [e["return"] for e in b["per_episode"][name]], name
        for sa, sb in zip(a["series"][name], b["series"][name]):
            np.testing.assert_array_equal(sa["config"], sb["config"])
        assert a["policies"][name]["score"] == b["policies"][name]["score"] or name == "random"
    assert a["policies"]["oracle"]["value0"] == b["policies"]["oracle"]["value0"]
    assert len(set(a["policies"]["random"]["episode_returns"])) > 1  # not a degenerate comparison


def _square(ctx, x):
    if x == ctx["fail_at"]:
        raise ValueError(f"item {x} is bad")
    return x * x + ctx["offset"]


def test_map_episodes_keeps_the_order_and_raises_a_task_error(ray_local):
    from agents.parallel import map_episodes

    items = list(range(23))
    ctx = {"offset": 1, "fail_at": -1}
    want = [x * x + 1 for x in items]
    assert map_episodes(_square, items, 1, context=ctx, progress=False) == want
    assert map_episodes(_square, items, 2, context=ctx, progress=False, chunk_size=3) == want
    with pytest.raises(ValueError, match="item 5 is bad"):
        map_episodes(_square, items, 2, context={"offset": 0, "fail_at": 5}, progress=False)


def test_missing_ray_is_a_clear_error(monkeypatch):
    import agents.parallel as par
    import train

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(par.RayNotInstalledError, match=r"pip install -e '\.\[cluster\]'"):
        par.require_ray()
    monkeypatch.setattr(par, "ray_available", lambda: False)
    with pytest.raises(ValueError, match=r"argument --workers: 2 needs Ray.*pip install -e '\.\[cluster\]'"):
        train.Args(workers=2, bc_expert="oracle")
    from agents.evaluate import main

    with pytest.raises(SystemExit) as err:
        main(["--workers", "2", "--out", "/nonexistent/never-written"])
    assert err.value.code == 2


def test_one_worker_never_imports_ray(tmp_path):
    """train.py --bc-expert oracle --workers 1 and agents.evaluate --workers 1, in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from test_parallel import tiny_traces, PROFILE
        from model.profile_schema import save_profile
        from traces import TraceSet
        from runtime.dynamics import EnvParams
        import agents.parallel, agents.sweep, train
        from agents.evaluate import main as evaluate
        tr = tiny_traces()
        splits = {{"bursty": "train", "hot-low": "val", "budget": "test"}}
        TraceSet.from_traces(tr, name="tiny", splits=splits).save({str(tmp_path / "set")!r})
        prof = str(save_profile(PROFILE, {str(tmp_path / "p.json")!r}))
        run = train.main(train.Args(profile=prof, traces={str(tmp_path / "set")!r}, total_timesteps=0, n_envs=2,
                                    runs_dir={str(tmp_path / "runs")!r}, final_eval=False, progress=False,
                                    bc_expert="oracle", bc_episodes=2, bc_epochs=1, workers=1,
                                    env=EnvParams(max_episode_steps=20)))
        evaluate(["--run", str(run), "--split", "test", "--out", {str(tmp_path / "eval")!r}, "--max-steps", "20",
                  "--policies", "static-largest,schedutil", "--workers", "1", "--no-progress"])
        print(json.dumps({{"ray": "ray" in sys.modules, "run": str(run)}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["ray"] is False
    assert (Path(res["run"]) / "warm_start" / "demos.npz").exists() and (tmp_path / "eval" / "report.json").exists()
