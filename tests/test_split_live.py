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
