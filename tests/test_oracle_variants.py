"""The oracle on randomised episodes (``options["ambient_shift_c"]``, ``options["capacity_scale"]``: the weather and
battery randomisation of ``train.py --hot-frac`` / ``--capacity-sigma`` and of ``--demo-dr``): it plans on the
episode's variant of its trace, so it acts exactly as it does on a trace that was shifted and scaled beforehand."""

from __future__ import annotations

import numpy as np
import pytest
from test_oracle import rollout, three_config_profile, trace
from test_padded_traces import assert_same_table

import agents.oracle as oracle_mod
from agents.oracle import ChargerBlindOracle, OracleController
from envs.power_env import MicroLLMPowerEnv
from envs.tables import PaddedTraces

N = 40
# a phone 11.5 deg C below its trip point: raised by SHIFT_C, the thermal mask binds (tests/test_oracle_masked.py)
COOL = dict(supply_w=0.0, ambient_c=30.0, demand_tps=60.0, capacity_wh=1.0, soc=0.9)
SHIFT_C, SCALE = 11.5, 0.35


def run(env, ctrl, options):
    return rollout(env, ctrl, max_steps=N, options=options, masked=getattr(ctrl, "masked", False))


def envs_pair():
    """The cool trace randomised at reset, and the same trace made hot and small beforehand."""
    shifted = dict(COOL, ambient_c=COOL["ambient_c"] + SHIFT_C, capacity_wh=COOL["capacity_wh"] * SCALE)
    kw = dict(profile=three_config_profile(), random_start=False)
    return MicroLLMPowerEnv(traces=[trace(N, **COOL)], **kw), MicroLLMPowerEnv(traces=[trace(N, **shifted)], **kw)


@pytest.mark.parametrize("masked", [False, True])
def test_oracle_on_a_randomised_episode_equals_the_oracle_on_the_trace_made_so(masked):
    env, made = envs_pair()
    opts = {"ambient_shift_c": SHIFT_C, "capacity_scale": SCALE}
    ret, acts = run(env, OracleController(env, n_temp=49, masked=masked), opts)
    ret_made, acts_made = run(made, OracleController(made, n_temp=49, masked=masked), {})
    assert acts == acts_made
    assert ret == pytest.approx(ret_made, abs=1e-9)
    # the randomisation matters here: planned on the trace as it is, the oracle would act otherwise
    _, acts_blind = run(env, OracleController(env, n_temp=49, masked=masked), {})
    assert acts_blind != acts


def test_the_variants_are_capped_and_the_oracle_stays_exact_after_a_fresh_start(monkeypatch):
    monkeypatch.setattr(oracle_mod, "MAX_VARIANTS", 2)
    env, made = envs_pair()
    oracle = OracleController(env, n_temp=49, masked=True)
    for shift in (1.0, 2.0, 3.0):  # the third starts the table afresh
        run(env, oracle, {"ambient_shift_c": shift})
        assert len(oracle.traces) <= oracle.n_base + 2
    ret, acts = run(env, oracle, {"ambient_shift_c": SHIFT_C, "capacity_scale": SCALE})
    ret_made, acts_made = run(made, OracleController(made, n_temp=49, masked=True), {})
    assert acts == acts_made and ret == pytest.approx(ret_made, abs=1e-9)
    # a variant is the env's trace underneath: the charger-blind oracle finds its plug-ins through it
    assert oracle.base_index(len(oracle.traces) - 1) == 0


def test_charger_blind_oracle_plans_on_the_variant_too():
    supply = np.where(np.arange(N) >= 25, 5.0, 0.0)  # a charger from row 25
    cool = dict(COOL, supply_w=supply)
    kw = dict(profile=three_config_profile(), random_start=False)
    env = MicroLLMPowerEnv(traces=[trace(N, **cool)], **kw)
    made = MicroLLMPowerEnv(traces=[trace(N, **dict(cool, ambient_c=COOL["ambient_c"] + SHIFT_C))], **kw)
    ret, acts = run(env, ChargerBlindOracle(env, n_temp=49), {"ambient_shift_c": SHIFT_C})
    ret_made, acts_made = run(made, ChargerBlindOracle(made, n_temp=49), {})
    assert acts == acts_made and ret == pytest.approx(ret_made, abs=1e-9)


def test_the_oracle_s_table_grows_by_one_row_per_variant_and_equals_one_built_afresh(monkeypatch):
    """``_variant`` appends the new variant to the padded table (made with room at the first variant, and again
    after a fresh start)."""
    monkeypatch.setattr(oracle_mod, "MAX_VARIANTS", 2)
    env, _ = envs_pair()
    oracle = OracleController(env, n_temp=49)
    for shift in (1.0, 2.0, 3.0):  # the third starts the table afresh
        oracle._variant(0, shift, 1.0)
        assert oracle.padded.count == len(oracle.traces) <= len(oracle.padded.n)
        assert_same_table(oracle.padded, PaddedTraces(oracle.traces))
