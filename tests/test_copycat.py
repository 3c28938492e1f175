"""benchmarks/copycat.py: the pinned policy sees the episode's first values of the pinned features, nothing else."""

from __future__ import annotations

import numpy as np


class _Recorder:
    """A controller that records what it was shown and returns action 0."""

    uses_masks = True

    def __init__(self):
        self.seen, self.masks = [], []

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        self.seen.append(np.array(observation, dtype=np.float64))
        self.masks.append(action_masks)
        return np.array([0]), state


def test_pinned_holds_features_at_the_episodes_first_values_and_passes_the_rest():
    from bench_helpers import load_benchmark

    mod = load_benchmark("copycat")
    rec = _Recorder()
    ctrl = mod.Pinned(rec, np.array([1, 3]))
    m = np.array([True, False])
    obs = [np.array([0.0, 1.0, 2.0, 3.0]), np.array([5.0, 6.0, 7.0, 8.0]), np.array([9.0, 10.0, 11.0, 12.0])]
    ctrl.predict(obs[0], episode_start=np.array([True]), action_masks=m)
    ctrl.predict(obs[1], episode_start=np.array([False]), action_masks=m)
    np.testing.assert_array_equal(rec.seen[1], [5.0, 1.0, 7.0, 3.0])  # features 1 and 3 from the first observation
    assert rec.masks[1] is m  # the masks reach a masked policy
    ctrl.predict(obs[2], episode_start=np.array([True]), action_masks=m)  # a new episode: new first values
    np.testing.assert_array_equal(rec.seen[2], obs[2])
    np.testing.assert_array_equal(obs[1], [5.0, 6.0, 7.0, 8.0])  # the caller's observation is not written to


def test_pinned_on_a_policy_without_masks_does_not_pass_them():
    from bench_helpers import load_benchmark

    mod = load_benchmark("copycat")

    class NoMasks:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.array([int(observation[0])]), state

    ctrl = mod.Pinned(NoMasks(), np.array([0]))
    assert not ctrl.uses_masks
    ctrl.predict(np.array([2.0, 0.0]), episode_start=np.array([True]))
    act, _ = ctrl.predict(np.array([7.0, 0.0]), episode_start=np.array([False]), action_masks=np.ones(3, bool))
    assert int(act[0]) == 2
