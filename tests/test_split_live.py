"""Live split generation (model.split_live): the same tokens as on the device, through split changes and a
server killed mid-generation (no token lost), and the link sensor that masks split configurations."""

from __future__ import annotations

import os
import random

import pytest
import torch
from test_split_server import TOKEN, start_server  # the server fixture helpers

from model import load_default
from model.split_client import SplitClient
from model.split_live import LinkState, SplitLinkSensor, SplitStream
from runtime.configspace import KNOBS, SPLIT_LOCAL, ConfigSpace, model_space, split_rules

PROMPT = "In the beginning God created the heaven and the earth."


@pytest.fixture(scope="module")
def m():
    torch.set_num_threads(1)
    return load_default()


def lossless_space():
    """fp32 weights, fp32 activations on the wire: split generation must equal local generation."""
    base = model_space(depths=(6,), heads=(1.0,), bits=(32,))
    return ConfigSpace(base.knobs + (KNOBS["split"].with_values((SPLIT_LOCAL, 3, 1, 0)),
                                     KNOBS["wire"].with_values(("none", "fp32"))), split_rules(32))


@pytest.fixture()
def server(tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    os.chmod(tok, 0o600)
    s = start_server(tmp_path, tok)
    yield s
    s.stop()


def test_split_changes_and_a_killed_server_lose_no_token(m, server):
    sp = lossless_space()
    n = 48
    m.set_config(m.validate({"depth": 6, "heads": 1.0, "bits": 32}))
    want = list(m.stream(PROMPT, n, temperature=0))
    client = SplitClient(server.url, TOKEN)
    client.open()
    link = LinkState()
    st = SplitStream(m, sp, client, link)
    rng = random.Random(0)
    order = [rng.randrange(len(sp)) for _ in range(n)]
    got = []
    for i, tok in enumerate(st.stream(PROMPT, n, current=lambda: order[len(got)], temperature=0)):
        got.append(tok)
        if i == 30:
            server.stop()  # the server dies mid-generation
    assert got == want  # every token, in order, as an uninterrupted run on the device
    assert st.stats["split_tokens"] > 5 and st.stats["fallback_tokens"] > 0
    assert link.total_failures >= 1 and not link.up
    assert st.stats["resends"] > 0  # split changes re-sent the context (the KV rule)


def test_link_sensor_reads_zero_while_the_link_is_down():
    t = [0.0]
    link = LinkState(retry_s=5.0, clock=lambda: t[0])
    s = SplitLinkSensor(link, lambda: 42.0, clock=lambda: t[0])
    assert s.read().bandwidth_mbps == 42.0
    link.fail("boom")
    assert s.read().bandwidth_mbps == 0.0
    t[0] = 5.1  # the back-off is over: try again
    assert s.read().bandwidth_mbps == 42.0
    link.fail("again")
    link.fail("again")
    t[0] = 5.1 + 9.9  # back-off doubles per consecutive failure (5 s, 10 s, 20 s ...)
    assert s.read().bandwidth_mbps == 0.0
    assert SplitLinkSensor(LinkState(), lambda: 42.0, connected=lambda: False).read().bandwidth_mbps == 0.0


def test_deploy_run_offloads_then_falls_back_when_the_server_dies(tmp_path, server, monkeypatch):
    """deploy.py run with a policy that insists on a split configuration: tokens go to the server until
    it is killed; then the link reads 0 Mbit/s, the shield overrides the policy (link_mask) and every
    requested token is still generated, on the device."""
    import json as _json

    from test_split_env import split_profile_dict

    import deploy
    import model.split_live as live

    prof = tmp_path / "split.json"
    prof.write_text(_json.dumps(split_profile_dict()))
    from policy_helpers import random_policy_file

    pol = random_policy_file(tmp_path / "split-policy.npz", prof, favour="L6-H100-fp32-E1-fp16")
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    os.chmod(tok, 0o600)
    calls = {"n": 0}
    real_step = live.SplitStream._split_step

    def step_then_kill(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 25:
            server.stop()  # the server dies mid-generation
        return real_step(self, *a, **kw)

    monkeypatch.setattr(live.SplitStream, "_split_step", step_then_kill)
    trace = tmp_path / "link.csv"
    from traces.store import save_trace

    save_trace(link_trace_csv(), trace)
    summary = deploy.main(["run", "--policy", str(pol), "--sensors", f"replay:{trace}", "--max-tokens", "120",
                           "--temperature", "0", "--split-server", server.url, "--split-token-file", str(tok),
                           "--no-split-shape", "--no-status", "--min-dwell", "0", "--every-tokens", "4"])
    st = summary["split"]
    assert summary["tokens"] == 120  # none lost
    assert st["split_tokens"] >= 20 and st["fallback_tokens"] + st["local_tokens"] > 0
    assert st["link_failures"] >= 1
    assert summary["overrides"].get("link_mask", 0) > 0  # the shield moved the policy off the dead link
    assert any("-E" not in name for name in summary["tokens_per_config"])  # local configurations ran


def link_trace_csv():
    """A phone trace with a good link (50 Mbit/s) for a few minutes."""
    import numpy as np

    from traces import make_trace
    from traces.schema import TraceMeta

    n = 60
    meta = TraceMeta(capacity_wh=15.0, initial_soc=0.8, device_kind="phone", source="test", license="CC0-1.0",
                     unit="u0")
    return make_trace("link", meta, np.arange(n) * 10.0, supply_w=np.zeros(n), plugged=np.zeros(n),
                      ambient_c=np.full(n, 25.0), demand_tps=np.full(n, 8.0), bandwidth_mbps=np.full(n, 50.0))
