"""benchmarks/session_room.py: the room a session leaves above the smallest configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from session_room import summarise  # noqa: E402


def test_the_room_is_the_charge_less_the_smallest_and_is_spent_where_the_cumulative_spending_crosses_it():
    s = {"trace": "t", "fold": 0, "dt_s": 60.0, "steps": 4, "charge_j": 100.0, "smallest_j": 90.0,
         "controllers": {"oracle": {"steps": 4, "death": False, "return": 5.0, "energy_j": 100.0,
                                    "extra_j": [4.0, 8.0, 10.0, 10.0]},
                         "greedy": {"steps": 3, "death": True, "return": 3.0, "energy_j": 100.0,
                                    "extra_j": [6.0, 12.0, 15.0]}}}
    summ = summarise(s)
    assert summ["room_j"] == pytest.approx(10.0)
    assert summ["rows"]["oracle"]["over_room_min"] is None  # spends exactly the room: lasts
    assert summ["rows"]["greedy"]["over_room_min"] == pytest.approx(2.0)  # 12 J > 10 J after the second minute
    assert summ["rows"]["greedy"]["extra_first_half_j"] == pytest.approx(12.0)
    assert summ["rows"]["oracle"]["extra_total_j"] == pytest.approx(10.0)


def test_a_session_the_smallest_configuration_cannot_last_has_no_room(tmp_path):
    from session_room import write

    s = {"trace": "t", "fold": 0, "dt_s": 60.0, "steps": 2, "charge_j": 50.0, "smallest_j": 60.0, "soc0": 0.05,
         "controllers": {"oracle": {"steps": 2, "death": True, "return": 1.0, "energy_j": 50.0, "extra_j": [1.0, 2.0]},
                         "static-smallest": {"steps": 2, "death": True, "return": 0.5, "energy_j": 50.0,
                                             "extra_j": [0.0, 0.0]}}}
    summ = summarise(s)
    assert summ["room_j"] < 0 and summ["rows"]["static-smallest"]["over_room_min"] == pytest.approx(1.0)
    write(s, summ, tmp_path / "room", "cmd", 1.0)
    assert "there is no room" in (tmp_path / "room.md").read_text()
    assert (tmp_path / "room.png").stat().st_size > 0
