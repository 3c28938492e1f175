"""``envs.tables.PaddedTraces.append``: a trace appended into a table's spare rows gives the table built afresh with
it (the oracle adds a randomised variant per episode this way, ``agents.oracle``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_oracle import three_config_profile, trace

from envs.power_env import MicroLLMPowerEnv
from envs.tables import PaddedTraces

PER_ROW = (*PaddedTraces.COLUMNS, "procs_down", *PaddedTraces.CONSTANTS)


def assert_same_table(got: PaddedTraces, want: PaddedTraces) -> None:
    """``got``'s filled rows are ``want`` (``got`` may have spare rows after them)."""
    m = want.count
    assert got.count == m and got.L == want.L and got.has_outages == want.has_outages
    for name in PER_ROW:
        np.testing.assert_array_equal(getattr(got, name)[:m], getattr(want, name), err_msg=name)  # NaN == NaN
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    np.testing.assert_array_equal(got.rows[:m * got.L], want.rows)
    for name in PaddedTraces.COLUMNS:  # the flat views follow the columns
        np.testing.assert_array_equal(got.flat[name][:m * got.L], want.flat[name], err_msg=name)


def traces_of_lengths(*ns):
    env = MicroLLMPowerEnv(traces=[trace(n, supply_w=0.5 * k, ambient_c=20.0 + k, demand_tps=30.0 + n)
                                   for k, n in enumerate(ns)], profile=three_config_profile(), random_start=False)
    return list(env.traces)


def test_appended_rows_equal_the_table_built_afresh():
    a, b, c = traces_of_lengths(30, 40, 25)
    hot = dataclasses.replace(a, ambient_c=[x + 7.0 for x in a.ambient_c], capacity_j=a.capacity_j * 0.5,
                              procs_down=[1] * a.n)  # a variant with outages: has_outages turns on
    table = PaddedTraces([a, b], spare=3)
    assert table.count == 2 and np.isnan(table.supply[2:]).all() and (table.n[2:] == 0).all()
    assert table.append(c) == 2
    assert_same_table(table, PaddedTraces([a, b, c]))
    assert not table.has_outages
    assert table.append(hot) == 3
    assert_same_table(table, PaddedTraces([a, b, c, hot]))
    assert table.has_outages
    # the last spare row is still untouched padding
    assert np.isnan(table.rows[4 * table.L:]).all() and np.isnan(table.capacity_j[4])


def test_a_full_table_or_a_longer_trace_is_refused():
    a, b, long = traces_of_lengths(20, 20, 30)
    with pytest.raises(ValueError, match="all 1 rows are filled"):
        PaddedTraces([a]).append(b)
    with pytest.raises(ValueError, match="30 rows does not fit rows of 20"):
        PaddedTraces([a], spare=1).append(long)
