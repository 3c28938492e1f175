"""benchmarks/unseen_inputs.py: holding one feature at its training mean, through the run's own normalisation."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from unseen_inputs import GOAL_FEATURES, held_at_mean  # noqa: E402

from agents.run_io import normalize_obs  # noqa: E402
from runtime.observation import GOAL  # noqa: E402


def _stats(support: bool) -> dict:
    s = {"mean": np.array([1.0, 5.0, 0.5]), "var": np.array([4.0, 1.0, 0.25]), "count": 10.0,
         "clip_obs": np.array(10.0), "epsilon": np.array(1e-8), "norm_obs": np.array(True)}
    if support:  # feature 2 pinned at 0 (--obs-drop), the others clipped to their training range
        s["obs_min"], s["obs_max"] = np.array([0.0, 2.0, 0.0]), np.array([3.0, 8.0, 0.0])
    return s


def test_held_feature_reads_as_its_mean_and_the_others_keep_the_runs_clip():
    stats = _stats(support=True)
    obs = np.array([9.0, 7.0, 4.0])  # feature 0 above its range, feature 2 a value the run never reads
    plain = normalize_obs(obs, stats)
    held = normalize_obs(obs, held_at_mean(stats, 1))
    assert held[1] == 0.0 and plain[1] != 0.0  # z of the mean
    np.testing.assert_array_equal(held[[0, 2]], plain[[0, 2]])  # clipped to 3, pinned at 0: as the run reads them
    assert plain[0] == np.float32((3.0 - 1.0) / 2.0)
    assert "obs_min" in stats and stats["obs_min"][1] == 2.0  # the run's statistics are left as they were


def test_held_feature_without_a_support_leaves_the_others_unclipped():
    stats = _stats(support=False)
    obs = np.array([9.0, 7.0, 4.0])
    held = normalize_obs(obs, held_at_mean(stats, 0))
    assert held[0] == 0.0
    np.testing.assert_array_equal(held[1:], normalize_obs(obs, stats)[1:])


def test_the_objectives_features_are_not_attributed():
    assert {n for n, *_ in GOAL} <= GOAL_FEATURES
    assert "supply_w" not in GOAL_FEATURES and "soc" not in GOAL_FEATURES
