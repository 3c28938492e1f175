"""Live device placement (model/placement.py): exact per-segment KV caches across re-placements and
configuration switches, masking of absent processors, fault recovery with no token lost, quarantine.

Multi-processor behaviour runs on ``ProcessorMap.fake_gpu()``, a test double whose "gpu" is the CPU."""

from __future__ import annotations

import random

import pytest
import torch

from model.model import ElasticGPT, ModelConfig
from model.placement import (
    FAULT_KINDS,
    DeviceLost,
    FaultInjector,
    NoProcessorLeft,
    PlacedModel,
    PlacementUnavailable,
    ProcessorHealth,
    ProcessorMap,
    SegmentError,
    classify_error,
)
from runtime import placement as P

TINY = ModelConfig(block_size=96, n_layer=4, n_head=4, n_embd=128, depths=(2, 3, 4))
FP32_TOL = 1e-5  # fp32 cached step vs a full recomputation of the prefix (measured worst here: 5e-7)
QUANT_TOL = 5e-2  # int8/int4: bf16 rounding depends on the batch shape (as tests/test_model.py)


@pytest.fixture(scope="module")
def tiny() -> ElasticGPT:
    torch.manual_seed(0)
    m = ElasticGPT(TINY).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values, and logits with real margins
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(3.0)
    m.prepare()
    return m


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _fake_values(depth: int) -> list[str]:
    return list(P.all_values(("cpu", "gpu"), max_depth=depth))


def _random_run(tiny, pm, rnd, n_tokens, configs, check):
    """Greedy generation with a random (configuration, placement) before each token; ``check(i, cfg, logits,
    prefix)`` sees every step. Returns the tokens and the (cfg, place) schedule the steps ran under."""
    cfg = configs[0]
    pm.set(cfg, "cpu")
    prompt = torch.randint(0, 256, (10,), generator=torch.Generator().manual_seed(rnd.randint(0, 999)))
    ids = prompt.tolist()
    logits = pm.prefill(prompt)
    schedule, tokens = [], []
    for i in range(n_tokens):
        if rnd.random() < 0.4:
            cfg = rnd.choice(configs)
        if rnd.random() < 0.6 or not pm.available(pm.placement, cfg.depth)[0]:
            pm.set(cfg, rnd.choice([v for v in _fake_values(cfg.depth) if pm.available(v, cfg.depth)[0]]))
        else:
            pm.set(cfg)
        nxt = int(logits.argmax())
        tokens.append(nxt)
        ids.append(nxt)
        logits = pm.step(nxt)
        schedule.append((pm._cur[0], pm._cur[1]))
        check(i, pm._cur[0], logits, ids)
    return tokens, schedule


def test_random_replacements_fp32_equal_full_recomputation(tiny):
    """≥ 60 greedy tokens, random re-placements over cpu / cpu.t1 / fake gpu / A:k:B and random depth and head
    switches: every step's logits equal a fresh full forward over the whole prefix (1e-5), and the tokens equal a
    generation that recomputes everything from scratch at each step."""
    rnd = random.Random(0)
    fp32 = [c for c in tiny.configs() if c.bits == 32]
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu())
    worst = [0.0]
    full_tokens = []

    def check(i, cfg, logits, ids):
        tiny.set_config(cfg)
        full = tiny.forward(torch.tensor([ids]))[:, -1]  # no cache: everything recomputed
        worst[0] = max(worst[0], (logits - full).abs().max().item())
        full_tokens.append(int(full.argmax()))

    tokens, schedule = _random_run(tiny, pm, rnd, 64, fp32, check)
    assert worst[0] < FP32_TOL, worst[0]
    assert tokens[1:] == full_tokens[:-1]  # each next token, chosen from the recomputed logits, is the same
    places = {p for _, p in schedule}
    assert any(P.two_segment(p) and p.startswith("cpu") for p in places)
    assert any(P.two_segment(p) and p.startswith("gpu") for p in places)
    assert {"cpu", "gpu"} <= places
    assert sum(s.copied_positions for s in pm.syncs) > 0  # segments moved by copying their caches
    assert sum(s.recomputed_positions for s in pm.syncs) > 0  # configuration switches re-ran changed blocks
    assert len({c for c, _ in schedule}) > 3


def test_random_replacements_all_precisions_equal_the_models_own_cache(tiny):
    """All precisions: the placed run is bit-identical to ElasticGPT's own KV-cache run under the same switches
    (moves copy, they do not change a number), and within the quantised tolerance of full recomputation."""
    rnd = random.Random(1)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu())
    ref_cache = tiny.new_cache(1, TINY.block_size)
    state = {"fed": 0, "worst_full": 0.0, "mismatch": 0}

    def check(i, cfg, logits, ids):
        tiny.set_config(cfg)
        if state["fed"] == 0:  # the prompt, as one chunk (as the placed prefill)
            tiny.forward(torch.tensor([ids[:-1]]), ref_cache)
        own = tiny.forward(torch.tensor([ids[-1:]]), ref_cache)[:, -1]
        state["fed"] = len(ids)
        state["mismatch"] += int(not torch.equal(own, logits))
        full = tiny.forward(torch.tensor([ids]))[:, -1]
        state["worst_full"] = max(state["worst_full"], (logits - full).abs().max().item())

    tokens, schedule = _random_run(tiny, pm, rnd, 64, tiny.configs(), check)
    assert state["mismatch"] == 0
    assert state["worst_full"] < QUANT_TOL
    assert {c.bits for c, _ in schedule} == {32, 8, 4}


def test_absent_processors_are_masked_with_the_reason(tiny):
    host = ProcessorMap()  # probed: this host
    ok, why = host.available("npu", 4)
    assert not ok and "needs the npu processor, which this host does not have" in why and "NPU backend" in why
    ok, why = host.available("lcpu:2:cpu", 4)
    assert not ok and "lcpu" in why
    assert host.available("cpu", 4)[0] and host.available("cpu.t1", 4)[0]
    ok, why = host.available("cpu:4:gpu", 4)
    assert not ok and "k < depth" in why  # the grammar's own message
    if not torch.cuda.is_available():
        ok, why = host.available("cpu:2:gpu", 4)
        assert not ok and "torch.cuda.is_available() is False" in why
        assert host.roles() == ("cpu",)
    pm = PlacedModel(tiny, host)
    tiny.set_config(tiny.full_config())
    with pytest.raises(PlacementUnavailable) as err:
        pm.set_placement("npu")
    assert str(err.value) == host.available("npu", 4)[1]
    assert pm.placement == "cpu"  # unchanged
    fake = ProcessorMap.fake_gpu()
    assert "TEST DOUBLE" in fake.label and fake.available("cpu:1:gpu", 2)[0]
    assert not fake.available("npu", 2)[0]
    with pytest.raises(ValueError, match="unknown processor role"):
        ProcessorMap({"tpu": "cpu"})


def test_cpu_t1_runs_its_segment_on_one_thread_and_restores(tiny):
    seen = []

    class Spy:
        def check(self, role, phase, deadline_s):
            if phase == "enter":
                seen.append((role, torch.get_num_threads()))

    before = torch.get_num_threads()
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(cpu_threads=2), injector=Spy())
    pm.set(tiny.full_config(), "cpu.t1")
    logits = pm.prefill(torch.tensor([1, 2, 3]))
    pm.step(int(logits.argmax()))
    pm.set_placement("cpu")
    pm.step(5)
    assert seen == [("cpu", 1), ("cpu", 1), ("cpu", 2)]
    assert torch.get_num_threads() == before


def _paired_run(tiny, kind, mirror, phase):
    """A fault on the fake GPU of 'cpu:2:gpu' at token 12; the reference moves to 'cpu' at the same token."""
    inj = FaultInjector(seed=3)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, deadline_ms=40, deadline_ms_per_token=1,
                     mirror=mirror, poison_lost=True, health=ProcessorHealth(clock=_Clock()))
    ref = PlacedModel(tiny, ProcessorMap.fake_gpu())
    for x in (pm, ref):
        x.set((4, 1.0, 32), "cpu:2:gpu")
    prompt = torch.arange(40, 52)
    a, b = pm.prefill(prompt), ref.prefill(prompt)
    worst, toks_a, toks_b = 0.0, [], []
    for i in range(24):
        if i == 12:
            inj.arm("gpu", kind, phase=phase)
            ref.set_placement("cpu")
        toks_a.append(int(a.argmax()))
        toks_b.append(int(b.argmax()))
        a, b = pm.step(toks_a[-1]), ref.step(toks_b[-1])
        worst = max(worst, (a - b).abs().max().item())
    return pm, worst, toks_a, toks_b


@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("phase", ["enter", "exit"])
def test_fault_recovers_to_the_uninterrupted_run(tiny, kind, phase):
    """Each fault kind, before or after the segment computed: generation continues on the survivor with the same
    logits (bit for bit) as an uninterrupted run that moved to the same placement at that token."""
    pm, worst, ta, tb = _paired_run(tiny, kind, mirror=True, phase=phase)
    assert worst == 0.0 and ta == tb
    (f,) = pm.faults
    assert (f.role, f.kind, f.from_place, f.to_place, f.token) == ("gpu", kind, "cpu:2:gpu", "cpu", 12 + 12)
    assert f.restored == ("mirror" if kind == "device_lost" else "copy")  # a lost device's cache is never read
    assert f.recover_ms > 0
    assert pm.length == 12 + 24 and pm.placement == "cpu"
    assert "gpu" in pm.health.unavailable_roles()


def test_lost_device_without_mirror_is_recomputed(tiny):
    """mirror=False: the lost fake GPU's cache (poisoned with NaN) is not read; its blocks are re-run over the
    prefix from the surviving segment's output: fp32-close to the uninterrupted run, same tokens."""
    pm, worst, ta, tb = _paired_run(tiny, "device_lost", mirror=False, phase="exit")
    assert pm.faults[0].restored == "recompute"
    assert worst < FP32_TOL and ta == tb


def test_fault_during_a_move_leaves_the_committed_state_exact(tiny):
    """A fault inside a repair (the move to a new configuration re-runs blocks on the gpu) is recovered from the
    last committed state; the result equals an uninterrupted run on the final placement."""
    inj = FaultInjector(seed=0)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, health=ProcessorHealth(clock=_Clock()))
    ref = PlacedModel(tiny, ProcessorMap.fake_gpu())
    prompt = torch.arange(60, 80)
    for x in (pm, ref):
        x.set((4, 1.0, 32), "cpu:1:gpu")
        x.prefill(prompt)
        x.set((4, 0.5, 32))  # every gpu block changes: the gpu segment re-runs the prefix
    inj.arm("gpu", "error", phase="exit")  # after its repair wrote into the new caches
    ref.set_placement("cpu")
    a, b = pm.step(7), ref.step(7)
    assert torch.equal(a, b)
    assert pm.faults[0].kind == "error" and pm.placement == "cpu"


def test_many_random_faults_lose_no_token(tiny):
    """60 random faults of every kind over random placements and switches: every token is produced and the text
    equals an uninterrupted run on the placement sequence the faulty run ended up with."""
    rnd = random.Random(7)
    clock = _Clock()
    inj = FaultInjector(seed=7)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, deadline_ms=40, deadline_ms_per_token=1,
                     poison_lost=True, health=ProcessorHealth(base_s=0.2, cap_s=1.0, forgive_s=2.0, clock=clock))
    prompt = torch.arange(100, 110)
    cfg = tiny.full_config()
    pm.set(cfg, "cpu:2:gpu")
    logits = pm.prefill(prompt)
    tokens, schedule = [], []
    while len(pm.faults) < 60:
        clock.t += 0.1
        if len(pm.ids) >= TINY.block_size - 1:  # crop as stream() does
            logits = pm.prefill(torch.tensor(pm.ids[-TINY.block_size // 2:]))
            schedule.append(("prefill", pm.ids, pm._cur))
        if rnd.random() < 0.3:
            cfg = rnd.choice(tiny.configs())
        vals = [v for v in _fake_values(cfg.depth) if pm.available(v, cfg.depth)[0]] or ["cpu"]
        pm.set(cfg, rnd.choice(vals) if rnd.random() < 0.5 or not pm.available(pm.placement, cfg.depth)[0]
               else pm.placement)
        alive = pm.alive_roles()
        if len(alive) > 1 and rnd.random() < 0.5:  # never the last processor alive: nothing to recover on
            inj.arm_random([r for r in P.roles_of(pm.placement)], max_after_calls=1)
        nxt = int(logits.argmax())
        tokens.append(nxt)
        logits = pm.step(nxt)
        inj.disarm()
        schedule.append(("step", nxt, pm._cur))
    kinds = {f.kind for f in pm.faults}
    assert kinds == set(FAULT_KINDS)
    ref = PlacedModel(tiny, ProcessorMap.fake_gpu())
    ref.set(tiny.full_config(), "cpu:2:gpu")
    ref_tokens = []
    logits_ref = ref.prefill(prompt)
    for what, arg, (c, place) in schedule:
        if what == "prefill":
            ref.set(c, place)
            logits_ref = ref.prefill(torch.tensor(arg))
            continue
        ref_tokens.append(int(logits_ref.argmax()))
        ref.set(c, place)
        logits_ref = ref.step(ref_tokens[-1])
    assert ref_tokens == tokens
    assert torch.equal(logits_ref, logits)


def test_quarantine_backs_off_and_doubles():
    clock = _Clock()
    h = ProcessorHealth(base_s=1.0, cap_s=5.0, forgive_s=60.0, clock=clock)
    assert h.fail("gpu", "device_lost: x") == 1.0
    clock.t = 0.5
    assert h.unavailable_roles() == {"gpu": "gpu quarantined for 0.5 s more after 1 fault in a row "
                                            "(last: device_lost: x)"}
    clock.t = 1.0
    assert not h.quarantined("gpu") and h.unavailable_roles() == {}  # retried after the back-off
    assert [h.fail("gpu", "e") for _ in range(4)] == [2.0, 4.0, 5.0, 5.0]  # keeps failing: longer, capped
    clock.t = 100.0
    assert h.fail("gpu", "e") == 1.0  # 60 s without a fault: forgiven, a new streak
    assert h.state()["gpu"].faults_total == 6 and len(h.events) == 6


def test_quarantine_masks_placements_and_no_processor_left(tiny):
    clock = _Clock()
    inj = FaultInjector(seed=0)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, health=ProcessorHealth(clock=clock))
    pm.set((2, 1.0, 32), "gpu")
    logits = pm.prefill(torch.arange(5))
    inj.arm("gpu", "error")
    logits = pm.step(int(logits.argmax()))
    assert pm.placement == "cpu"  # the default re-placement: the fastest alive processor
    ok, why = pm.available("cpu:1:gpu")
    assert not ok and "gpu quarantined" in why
    with pytest.raises(PlacementUnavailable, match="gpu quarantined"):
        pm.set_placement("gpu")
    inj.arm("cpu", "error")
    n = pm.length
    with pytest.raises(NoProcessorLeft):
        pm.step(3)
    assert pm.length == n  # nothing committed
    clock.t = 1.5  # both back-offs (1 s) over: retried
    pm.set_placement("cpu:1:gpu")
    assert pm.step(3).shape == (1, 256) and pm.length == n + 1


def test_replace_fn_must_pick_alive_processors(tiny):
    inj = FaultInjector(seed=0)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, replace_fn=lambda cur, alive: "gpu",
                     health=ProcessorHealth(clock=_Clock()))
    pm.set((2, 1.0, 32), "gpu")
    pm.prefill(torch.arange(5))
    inj.arm("gpu", "error")
    with pytest.raises(ValueError, match="gpu is not alive"):
        pm.step(1)


def test_errors_are_classified_by_kind_and_message():
    assert isinstance(classify_error(RuntimeError("CUDA error: device-side assert triggered"), "gpu"), DeviceLost)
    assert isinstance(classify_error(RuntimeError("CUDA error: an illegal memory access was encountered"), "gpu"),
                      DeviceLost)
    assert isinstance(classify_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "gpu"),
                      SegmentError)
    assert isinstance(classify_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "cpu"), SegmentError)
    assert classify_error(ValueError("a bug"), "cpu") is None  # raised, not recovered


def test_stream_matches_the_models_stream_across_the_context_crop(tiny):
    tiny.set_config(tiny.full_config())
    want = list(tiny.stream("In the beginning", 120, seed=5))  # crosses the 96-byte context
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu())
    pm.set(tiny.full_config(), "cpu:3:gpu")
    assert list(pm.stream("In the beginning", 120, seed=5)) == want


def test_late_call_on_the_only_processor_alive_is_kept(tiny):
    """A timeout when no other processor is alive: the (correct) result is kept, nothing is re-placed."""
    clock = _Clock()
    inj = FaultInjector(seed=0)
    health = ProcessorHealth(clock=clock)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), injector=inj, health=health, deadline_ms=30)
    ref = PlacedModel(tiny, ProcessorMap.fake_gpu())
    for x in (pm, ref):
        x.set((3, 1.0, 32), "cpu")
        x.prefill(torch.arange(9))
    health.fail("gpu", "earlier fault")
    inj.arm("cpu", "timeout")
    assert torch.equal(pm.step(4), ref.step(4))
    assert pm.late_accepted == 1 and pm.faults == [] and pm.placement == "cpu"


def test_a_placement_quarantined_after_it_was_set_is_replaced_at_the_next_token(tiny):
    clock = _Clock()
    health = ProcessorHealth(clock=clock)
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), health=health)
    pm.set((3, 1.0, 32), "cpu:1:gpu")
    pm.prefill(torch.arange(9))
    health.fail("gpu", "seen by another component")
    pm.step(1)
    assert pm.placement == "cpu" and pm.quarantine_replacements == 1


def test_device_copies_of_weights_match_the_cpu_packs(tiny):
    """The weights a non-CPU device gets (built from the resident masters; int8/int4 dequantised) run the same
    numbers: forced onto the CPU, fp32 is bit-identical and int8/int4 within the bf16-activation error."""
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu())
    pm._plan_on = lambda dev, cfg, a, b: [pm._pack_on(dev, p) for p in tiny._plans[cfg][a:b]]  # the non-CPU path
    ref = PlacedModel(tiny, ProcessorMap.fake_gpu())
    prompt = torch.arange(30, 50)
    for cfg, tol in [((4, 0.75, 32), 0.0), ((4, 0.5, 8), QUANT_TOL), ((3, 0.25, 4), QUANT_TOL)]:
        for x in (pm, ref):
            x.set(cfg, "cpu:2:gpu")
        a, b = pm.prefill(prompt), ref.prefill(prompt)
        for t in range(5):
            a, b = pm.step(t), ref.step(t)
            assert (a - b).abs().max().item() <= tol, cfg
    assert len(pm._packs) == 4 + 4 + 3 and pm.weight_bytes_on("cpu") > 0  # one per (layer, heads, bits) used


def test_live_mask_of_a_place_space(tiny):
    from runtime.configspace import place_space

    space = place_space(tiny.space)
    host = ProcessorMap()
    masked = host.unavailable(space.configs)
    for i, c in enumerate(space.configs):
        needs_absent = any(host.device(r) is None for r in P.roles_of(c.place))
        assert (i in masked) == needs_absent, c
    assert all("which this host does not have" in why for why in masked.values())
    clock = _Clock()
    pm = PlacedModel(tiny, ProcessorMap.fake_gpu(), health=ProcessorHealth(clock=clock))
    pm.health.fail("gpu", "x")
    live = pm.unavailable(space.configs)
    assert all("gpu" in P.roles_of(space.configs[i].place) for i in live if "quarantined" in live[i])
    assert any("quarantined" in why for why in live.values())
    clock.t = 2.0
    assert not any("quarantined" in why for why in pm.unavailable(space.configs).values())
