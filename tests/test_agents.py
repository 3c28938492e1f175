"""Baselines, forecast MPC, the registry and the evaluator (``agents/``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agents.baselines import (
    BudgetEstimator,
    F,
    ObsModel,
    efficient_configs,
    largest_config,
    smallest_config,
    static_fit_config,
)
from agents.evaluate import evaluate_controllers, format_table, main, normalised_score, write_report
from agents.registry import (
    ALL_CONTROLLERS,
    BASELINES,
    ORACLE,
    ORACLE_BLIND,
    ORACLE_CHARGER_BLIND,
    ORACLE_HAZARD,
    ORACLE_MASKED,
    ORACLES,
    PLACE_BASELINES,
    SPLIT_BASELINES,
    make_controller,
)
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from traces.schema import TraceMeta, make_trace

PROFILE = example_profile(12)


def trace(n=40, *, supply_w=0.0, ambient_c=25.0, demand_tps=20.0, capacity_wh=10.0, soc=1.0, budget_w=None,
          base_w=None, kind="phone", name="t", deadline_s=None):
    meta = TraceMeta(capacity_wh=capacity_wh, initial_soc=soc, device_kind=kind, source="test",
                     license="CC0-1.0", unit=name, deadline_s=deadline_s)
    plugged = (np.asarray(supply_w) > 0).astype(float) if np.ndim(supply_w) else float(supply_w > 0)
    return make_trace(name, meta, np.arange(n) * 10.0, supply_w=supply_w, plugged=plugged,
                      ambient_c=ambient_c, demand_tps=demand_tps, bandwidth_mbps=10.0, budget_w=budget_w,
                      base_load_w=base_w)


def small_set():
    rng = np.random.default_rng(1)
    n = 40
    return [
        trace(n, demand_tps=rng.uniform(0, 120, n), name="bursty"),
        trace(n, ambient_c=41.0, demand_tps=60.0, capacity_wh=0.2, soc=0.6, name="hot-low"),
        trace(n, supply_w=np.where(np.arange(n) < 20, 8.0, 0.0), demand_tps=40.0, budget_w=1.0, name="budget"),
    ]


def env_for(traces=None, **kw):
    return MicroLLMPowerEnv(profile=PROFILE, traces=traces or small_set(), **kw)


# ---- the predict() protocol ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_CONTROLLERS)
def test_every_controller_runs_through_sb3_evaluate_policy(name):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = env_for()  # random starts: episodes run from a random row to the end of a trace
    venv = DummyVecEnv([lambda: Monitor(env)])
    # oracle / mpc act on `env`, the DummyVecEnv's sub-env; an oracle on a coarse grid (the same code, faster)
    ctrl = make_controller(name, env, **({"n_soc": 51, "n_temp": 13, "n_backlog": 5} if name in ORACLES else {}))
    venv.seed(0)
    mean, std = evaluate_policy(ctrl, venv, n_eval_episodes=3, deterministic=True)
    assert math.isfinite(mean) and math.isfinite(std)


@pytest.mark.parametrize("name", BASELINES)
def test_predict_takes_one_observation_or_a_batch(name):
    env = env_for(random_start=False)
    obs, _ = env.reset(options={"trace": 0, "start": 0})
    ctrl = make_controller(name, env)
    a, state = ctrl.predict(obs)
    assert np.ndim(a) == 0 and 0 <= int(a) < env.action_space.n and state is None
    acts, _ = ctrl.predict(np.stack([obs, obs, obs]), episode_start=np.ones(3, bool))
    assert acts.shape == (3,) and acts.dtype.kind == "i"


def test_registry_names():
    assert ALL_CONTROLLERS == BASELINES + SPLIT_BASELINES + PLACE_BASELINES + [
        ORACLE, ORACLE_MASKED, ORACLE_CHARGER_BLIND, ORACLE_BLIND, ORACLE_HAZARD]
    env = env_for()
    assert all(make_controller(n, env).name == n for n in ALL_CONTROLLERS)
    with pytest.raises(KeyError, match="unknown controller"):
        make_controller("nope", env)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_decide_from_the_past_only(name):
    # two traces equal for 25 steps, then different: every action up to step 25 must agree
    n, cut = 40, 25
    later = np.r_[np.full(cut, 30.0), np.full(n - cut, 150.0)]
    hot = np.r_[np.full(cut, 25.0), np.full(n - cut, 44.0)]
    a = trace(n, demand_tps=30.0, capacity_wh=0.5, soc=0.7, name="a")
    b = trace(n, demand_tps=later, ambient_c=hot, supply_w=np.r_[np.zeros(cut), np.full(n - cut, 9.0)],
              capacity_wh=0.5, soc=0.7, name="b")
    env = env_for([a, b], random_start=False)
    runs = []
    for k in (0, 1):
        ctrl = make_controller(name, env)  # fresh: the random baseline draws the same numbers
        obs, _ = env.reset(options={"trace": k, "start": 0})
        acts = []
        for t in range(cut):
            act, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
            acts.append(int(act))
            obs, *_ = env.step(act)
        runs.append(acts)
    assert runs[0] == runs[1]


# ---- the rules ----------------------------------------------------------------------------------
def test_static_and_frontier_choices():
    env = env_for()
    c = env.costs
    assert c.quality[largest_config(c)] == c.quality.max()
    assert c.ept_j[smallest_config(c)] == c.ept_j.min()
    front = efficient_configs(c)
    assert np.all(np.diff(c.ept_j[front]) > 0) and np.all(np.diff(c.quality[front]) > 0)
    assert front[0] == smallest_config(c) and front[-1] == largest_config(c)
    # static-fit: a rich supply fits the largest; a nearly empty battery only the cheapest
    rich = env_for([trace(supply_w=50.0, name="rich")])
    poor = env_for([trace(demand_tps=200.0, capacity_wh=0.01, soc=0.1, name="poor")])
    assert static_fit_config(rich) == largest_config(c)
    assert static_fit_config(poor) == smallest_config(c)


def test_battery_ladder_tiers():
    env = env_for()
    ctrl = make_controller("battery-ladder", env)
    obs = np.zeros(env.observation_space.shape, np.float32)
    q = env.costs.quality
    picks = []
    for soc in (0.9, 0.5, 0.2, 0.05):
        obs[F["soc"]] = soc
        picks.append(int(ctrl.predict(obs)[0]))
    assert picks[0] == largest_config(env.costs) and picks[-1] == smallest_config(env.costs)
    assert all(q[x] > q[y] for x, y in zip(picks, picks[1:]))  # strictly descending tiers
    obs[F["plugged"]] = 1.0
    assert int(ctrl.predict(obs)[0]) == largest_config(env.costs)


def test_budget_and_base_load_are_recovered_from_observations():
    env = env_for([trace(demand_tps=15.0, budget_w=1.3, base_w=0.4, name="b")], random_start=False)
    obs, _ = env.reset(options={"trace": 0, "start": 0, "config": 3})  # no switch on the 1st step
    est, model = BudgetEstimator(env.step_s), ObsModel(env)
    other_w = 0.4 + env.trace.device.idle_power_w
    assert est.update(obs, model.llm_w(obs)) is None
    assert model.base_w(obs) == pytest.approx(other_w, rel=1e-5)  # nothing served yet
    for a in (3, 3, 7, 7):
        obs, _, _, _, info = env.step(a)
        assert model.prev_config(obs) == a
        # demand below throughput, no backlog: the model drew demand · e_token exactly
        assert model.llm_w(obs) == pytest.approx(15.0 * env.costs.ept_j[a], rel=1e-4)
        # (a switch's few mJ land in the base estimate: 5 ms × 5 W / 10 s = 2.5 mW)
        assert model.base_w(obs) == pytest.approx(other_w, rel=1e-4, abs=5e-3 * info["switched"])
        budget_w = est.update(obs, model.llm_w(obs))
        if not info["switched"]:  # a switch's energy is not in llm_w: that step's estimate is off
            assert budget_w == pytest.approx(1.3, rel=1e-3)


def test_greedy_budget_follows_supply_and_budget():
    env = env_for([trace(supply_w=30.0, name="plugged"), trace(demand_tps=80.0, budget_w=2.5, name="tight"),
                   trace(demand_tps=80.0, capacity_wh=0.05, soc=0.2, name="low")], random_start=False)
    c = env.costs

    def first_actions(k, n=4):
        ctrl = make_controller("greedy-budget", env)
        obs, _ = env.reset(options={"trace": k, "start": 0})
        out = []
        for t in range(n):
            a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
            out.append(int(a))
            obs, *_ = env.step(a)
        return out

    assert first_actions(0)[-1] == largest_config(c)
    tight = first_actions(1)[-1]  # once the budget is known (from the 2nd observation on)
    assert c.quality[tight] < c.quality.max()
    tok_w = np.minimum(80.0, c.tps) * c.ept_j  # the budget covers the model's own power
    assert tok_w[tight] <= 2.5 and c.quality[tight] == c.quality[tok_w <= 2.5].max()
    assert c.quality[first_actions(2)[-1]] < c.quality.max()


def test_schedutil_headroom_and_thermal_cap():
    env = env_for()
    ctrl = make_controller("schedutil", env)
    c = env.costs
    obs = np.zeros(env.observation_space.shape, np.float32)
    obs[F["temp_headroom_c"]] = 20.0
    obs[F["demand_tps"]] = 10.0
    slow = int(ctrl.predict(obs)[0])
    assert slow == largest_config(c)  # 1.25 × 10 tok/s: even the slowest keeps up
    obs[F["demand_tps"]] = 0.9 * c.tps.max() / 1.25
    fast = int(ctrl.predict(obs)[0])
    assert c.tps[fast] >= 0.9 * c.tps.max() and c.tps[fast] < c.tps[slow] * 10
    obs[F["demand_tps"]] = 10.0
    obs[F["temp_headroom_c"]] = 0.0
    assert int(ctrl.predict(obs)[0]) == smallest_config(c)


def test_mpc_avoids_a_predicted_death_that_static_largest_runs_into():
    # 810 J: the cheapest configuration needs ~620 J for the 60 steps, the largest ~1200 J
    env = env_for([trace(60, demand_tps=40.0, capacity_wh=0.25, soc=0.9, name="low")], random_start=False)

    def run(name):
        ctrl = make_controller(name, env)
        obs, _ = env.reset(options={"trace": 0, "start": 0})
        for t in range(60):
            a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
            obs, r, term, trunc, _ = env.step(a)
            if term or trunc:
                return term
        return False

    assert run("static-largest") and not run("mpc")


# ---- the evaluator ------------------------------------------------------------------------------
def test_evaluate_controllers_scores_and_report(tmp_path):
    factory = lambda: env_for(random_start=False)  # noqa: E731
    names = ["random", "static-smallest", "greedy-budget", "oracle"]
    ctrls = {n: (lambda env, n=n: make_controller(n, env)) for n in names}
    res = evaluate_controllers(factory, ctrls, max_steps=30, record=True, progress=False)
    pol = res["policies"]
    assert pol["random"]["score"] == pytest.approx(0.0) and pol["oracle"]["score"] == pytest.approx(1.0)
    assert all(pol["oracle"]["return"] >= pol[n]["return"] - 1e-6 for n in names)
    assert pol["oracle"]["deaths_not_oracle"] == 0
    for n in names:
        per, orc = res["per_episode"][n], res["per_episode"]["oracle"]
        assert pol[n]["deaths_not_oracle"] == sum(e["death"] and not o["death"] for e, o in zip(per, orc))
    m = pol["static-smallest"]
    assert m["switches"] <= len(res["episodes"])  # at most the first step of each episode
    assert m["ipj"] == pytest.approx(m["quality_per_token"] * m["tokens"] / m["energy_j"])
    for key in ("tokens", "energy_j", "thermal", "slo", "budget", "deaths", "decision_us"):
        assert key in m
    table = format_table(res)
    assert table.index("| oracle") < table.index("| random")
    paths = write_report(res, tmp_path, {"title": "t"}, ["static-smallest", "oracle"], step_s=10.0,
                         t_max_c=[45.0] * 3)
    for key in ("md", "csv", "json"):
        assert paths[key].exists()
    assert len(list(tmp_path.glob("*.png"))) == 3
    data = json.loads(paths["json"].read_text())
    assert set(data["policies"]) == set(names)
    assert math.isnan(normalised_score(1.0, 2.0, 2.0))


def test_deaths_the_oracle_avoids_are_counted_per_episode():
    # 60 steps on a small battery: the largest configuration dies, the oracle does not
    factory = lambda: env_for([trace(60, demand_tps=40.0, capacity_wh=0.25, soc=0.9, name="low")],  # noqa: E731
                              random_start=False)
    ctrls = {n: (lambda env, n=n: make_controller(n, env)) for n in ("static-largest", "oracle")}
    res = evaluate_controllers(factory, ctrls, max_steps=60, progress=False)
    assert res["policies"]["static-largest"]["deaths_not_oracle"] == 1
    assert res["policies"]["oracle"]["deaths"] == 0
    no_oracle = evaluate_controllers(factory, {"static-largest": ctrls["static-largest"]}, max_steps=60,
                                     progress=False)
    assert math.isnan(no_oracle["policies"]["static-largest"]["deaths_not_oracle"])


def test_evaluate_cli_with_a_saved_run(tmp_path):
    from stable_baselines3 import PPO

    from agents.run_io import save_run
    from traces import TraceSet

    set_dir = tmp_path / "set"
    traces = small_set()
    TraceSet.from_traces(traces, name="small", splits={t.meta.unit: "test" for t in traces}).save(set_dir)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    env_kwargs = {"profile": str(profile), "traces": str(set_dir), "split": "test"}
    model = PPO("MlpPolicy", MicroLLMPowerEnv(**env_kwargs), n_steps=64, batch_size=32, verbose=0, device="cpu")
    run = tmp_path / "run"
    save_run(run, model, None, {"algo": "ppo", "env_kwargs": env_kwargs, "policy_kwargs": {}})
    out = tmp_path / "eval"
    assert main(["--run", str(run), "--traces", str(set_dir), "--split", "test", "--out", str(out),
                 "--max-steps", "25", "--no-progress", "--oracle-grid", "51,13,5"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert set(data["policies"]) == {"rl:ppo", *BASELINES, ORACLE}  # no split rules without split configurations
    assert data["meta"]["best_baseline"] in BASELINES
    md = (out / "report.md").read_text()
    assert "| rl:ppo |" in md and ".png)" in md
    assert len(list(out.glob("*.png"))) == 3
    # another --seed draws another random policy (the score's zero), not seed 0's again
    assert main(["--run", str(run), "--traces", str(set_dir), "--split", "test", "--out", str(tmp_path / "e7"),
                 "--max-steps", "25", "--no-progress", "--oracle-grid", "51,13,5", "--policies", "random",
                 "--seed", "7"]) == 0
    seven = json.loads((tmp_path / "e7" / "report.json").read_text())["policies"]["random"]["return"]
    assert seven != data["policies"]["random"]["return"]
    with pytest.raises(SystemExit, match="--run .*not a run folder.*train one"):  # no traceback for a wrong path
        main(["--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "e9")])
    with pytest.raises(SystemExit) as e:  # a wrong --traces path: a usage error, no traceback
        main(["--traces", str(tmp_path / "no-set"), "--policies", "random", "--out", str(tmp_path / "e10")])
    assert e.value.code == 2
    # a run over other configurations than the evaluation's profile: one line naming the fix, not a numpy error
    other = tmp_path / "other.json"
    other.write_text(json.dumps(example_profile(6)))
    with pytest.raises(SystemExit, match="trained on .* configurations .* evaluate it with the profile"):
        main(["--run", str(run), "--traces", str(set_dir), "--split", "test", "--profile", str(other),
              "--out", str(tmp_path / "e8"), "--max-steps", "5", "--no-progress"])


# ---- the rules under the env's action masks -------------------------------------------------------
def test_step_down_picks_the_best_allowed_configuration_no_costlier_than_the_choice():
    from runtime.rules import step_down

    ept, q = np.array([1.0, 4.0, 2.0, 3.0, 0.5]), np.array([0.1, 0.9, 0.3, 0.5, 0.05])
    allowed = np.array([True, False, True, True, False])
    assert step_down(1, allowed, ept, q) == 3  # the best quality among the allowed ones costing <= 4 J
    assert step_down(2, allowed, ept, q) == 2  # allowed: unchanged
    only_costlier = np.array([False, True, False, False, False])
    assert step_down(4, only_costlier, ept, q) == 1  # nothing as cheap: the cheapest allowed one
    q_tie = np.array([0.1, 0.9, 0.5, 0.5, 0.05])
    assert step_down(1, allowed, ept, q_tie) == 2  # equal quality: the cheaper


def test_a_rule_is_held_to_the_masks_below_the_battery_reserve():
    """Below the reserve, unplugged, the env masks all but the cheapest quarter of configurations: a masked policy
    cannot run the largest one, so a rule that ignores the mask is stepped down (and counted), unless asked not to."""
    from agents.baselines import largest_config
    from agents.evaluate import run_episode

    env = env_for([trace(12, soc=0.03, demand_tps=30.0, capacity_wh=50.0, name="low")])
    u = env.unwrapped
    big = largest_config(u.costs)
    env.reset(seed=0, options={"trace": 0, "start": 0})
    assert not u.action_masks()[big]  # the masks apply from the first decision on
    rule = make_controller("static-largest", env)
    held = run_episode(env, rule, {"trace": 0, "start": 0}, 10, seed=0, record=True)
    assert held["mask_steps"] == 10 and not held["death"]
    cfgs = held["series"]["config"].tolist()
    assert big not in cfgs and u.action_masks()[cfgs[-1]]
    free = run_episode(env, rule, {"trace": 0, "start": 0}, 10, seed=0, record=True, rules_under_masks=False)
    assert free["mask_steps"] == 0 and set(free["series"]["config"].tolist()) == {big}
    assert free["energy_j"] > held["energy_j"]
    anchor = run_episode(env, make_controller("random", env), {"trace": 0, "start": 0}, 10, seed=0)
    assert anchor["mask_steps"] == 0  # the score's zero is not moved


def test_demonstrations_of_a_rule_are_labelled_with_what_it_runs_under_the_masks():
    """Behaviour cloning learns the rule as evaluated: a label the mask forbids is the stepped-down choice, so
    every label is allowed by the mask stored beside it (the largest configuration only where it is allowed)."""
    from agents.baselines import largest_config
    from agents.imitation import collect

    env = env_for([trace(12, soc=0.03, demand_tps=30.0, capacity_wh=50.0, name="low")], random_start=False)
    big = largest_config(env.unwrapped.costs)
    d = collect(env, "static-largest", 2, seed=0, max_steps=10, progress=False)
    assert d.masks[np.arange(len(d.labels)), d.labels].all()
    assert (d.labels == big).sum() == (d.masks[:, big]).sum() < len(d.labels)
