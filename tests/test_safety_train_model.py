"""Safety of train.py, the model checkpoints, profiles, live mode and traces given from code:
exclusive run folders, no empty folders after a failed start, splits checked before training,
argument ranges, checkpoint integrity, profile/model consistency, trace validation."""

from __future__ import annotations

import io
import json
import math
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import model as M
from model.model import ElasticGPT, ModelConfig
from model.profile_schema import ProfileError, example_profile, save_profile, validate_profile
from runtime.dynamics import EnvParams

# ---- train.py ---------------------------------------------------------------------------------------


def _train_args(tmp_path, **kw):
    import train

    prof = tmp_path / "p.json"
    if not prof.exists():
        save_profile(example_profile(12), prof)
    base = dict(profile=str(prof), bc_expert="none", total_timesteps=0, n_envs=2, eval_freq=64, eval_episodes=1,
                checkpoint_freq=64,
                runs_dir=str(tmp_path / "runs"), final_eval=False, progress=False,
                env=EnvParams(max_episode_steps=8))
    return train.Args(**{**base, **kw})


def _run_folders(tmp_path) -> list[Path]:
    runs = tmp_path / "runs"
    return sorted(runs.iterdir()) if runs.exists() else []


def test_two_runs_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    import train

    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))
    a = train.main(_train_args(tmp_path))
    b = train.main(_train_args(tmp_path))
    assert a != b, "two runs wrote into the same folder"
    assert (a / "config.json").exists() and (b / "config.json").exists()
    assert len(_run_folders(tmp_path)) == 2


def test_failed_start_leaves_no_run_folder(tmp_path):
    import train

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError):
        train.main(_train_args(tmp_path, profile=str(bad)))
    assert _run_folders(tmp_path) == []


def _trace_set_without(tmp_path, missing: str) -> Path:
    """A copy of a few default traces whose ``missing`` split is empty."""
    import traces as T

    ts = T.TraceSet.load(T.default_trace_set_dir())
    keep = {"train": ts.split("train")[:2], "val": ts.split("val")[:1], "test": ts.split("test")[:1]}
    keep[missing] = []
    picked = [t for s in ("train", "val", "test") for t in keep[s]]
    splits = {t.meta.unit: s for s in keep for t in keep[s]}
    out = tmp_path / f"no-{missing}"
    T.TraceSet.from_traces(picked, name=f"no-{missing}", splits=splits).save(out)
    return out


@pytest.mark.parametrize("missing,final_eval", [("test", True), ("val", False)])
def test_empty_split_fails_before_training(tmp_path, monkeypatch, missing, final_eval):
    import train

    set_dir = _trace_set_without(tmp_path, missing)

    def no_agent(*a, **k):
        raise AssertionError("an agent was built although a split is empty")

    monkeypatch.setattr(train, "make_agent", no_agent)
    with pytest.raises(train.TraceSplitError, match=rf"{set_dir}.*'{missing}' split has no traces"):
        train.main(_train_args(tmp_path, traces=str(set_dir), final_eval=final_eval, total_timesteps=64))
    assert _run_folders(tmp_path) == []


@pytest.mark.parametrize("argv,flag", [
    (["--total-timesteps", "-5"], "--total-timesteps"),
    (["--total-timesteps", "0.5"], "--total-timesteps"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--eval-episodes", "0"], "--eval-episodes"),
    (["--n-envs", "-1"], "--n-envs"),
    (["--eval-freq", "0"], "--eval-freq"),
    (["--checkpoint-freq", "0"], "--checkpoint-freq"),
    (["--bc-episodes", "0"], "--bc-episodes"),
    (["--bc-epochs", "0"], "--bc-epochs"),
    (["--bc-lr", "0"], "--bc-lr"),
    (["--dagger-rounds", "-1"], "--dagger-rounds"),
    (["--dagger-episodes", "0"], "--dagger-episodes"),
    (["--dagger-beta", "1.5"], "--dagger-beta"),
    (["--threads", "0"], "--threads"),
    (["--seed", "-1"], "--seed"),
    (["--algo", "sac"], "--algo"),
    (["--exp-name", "../x"], "--exp-name"),
])
def test_train_args_out_of_range_are_usage_errors(argv, flag, capsys):
    import train
    from model.cli import parse_dataclass_args

    with pytest.raises(SystemExit) as e:
        parse_dataclass_args(train.Args, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err and ("allowed" in err or "choose" in err or "name" in err), err


def test_train_args_in_range_are_accepted():
    import train
    from model.cli import parse_dataclass_args

    a = parse_dataclass_args(train.Args, ["--total-timesteps", "2e6", "--learning-rate", "0", "--n-envs", "0"])
    assert a.total_timesteps == 2e6 and a.learning_rate == 0 and a.n_envs == 0
    assert parse_dataclass_args(train.Args, []).total_timesteps == -1


def test_help_prints_a_percent_sign_in_a_field_docstring_as_written(capsys):
    """A field docstring is prose: "100 % accuracy" must not be read as an argparse template ("% a" is a valid
    %-conversion, which printed the option's whole dict into train.py --help)."""
    import train
    from model.cli import parse_dataclass_args

    with pytest.raises(SystemExit) as e:
        parse_dataclass_args(train.Args, ["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fitted to 100 % accuracy" in out and "option_strings" not in out


# ---- checkpoint integrity ------------------------------------------------------------------------

TINY = ModelConfig(block_size=128, n_layer=2, n_head=4, n_embd=128, depths=(1, 2), head_fractions=(1.0,))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    m = ElasticGPT(TINY).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(m.checkpoint({"note": "test"}), path)
    return path


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_flipped_bytes_in_a_checkpoint_are_refused(tiny_ckpt, tmp_path):
    data = bytearray(tiny_ckpt.read_bytes())
    z = zipfile.ZipFile(io.BytesIO(bytes(data)))
    big = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's bytes
    mid = big.header_offset + big.file_size // 2
    for i in range(mid, mid + 400):
        data[i] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(M.CheckpointError, match="corrupted"):
        M.load(bad)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    torch.manual_seed(0)
    m = ElasticGPT(TINY).eval()
    ck = m.checkpoint()
    ck["state_dict"]["blocks.1.fc.weight"][3, 7] = float("nan")
    del ck["meta"]["state_sha256"]  # an older checkpoint without the digest: the finite check still holds
    torch.save(ck, tmp_path / "nan.pt")
    with pytest.raises(M.CheckpointError, match=r"'blocks\.1\.fc\.weight'.*non-finite"):
        M.load(tmp_path / "nan.pt")


def test_expected_sha256_is_compared(tiny_ckpt):
    sha = _sha(tiny_ckpt)
    m = M.load(tiny_ckpt, expect_sha256=sha)
    assert m.checkpoint_sha256 == sha
    with pytest.raises(M.CheckpointMismatchError, match="sha256"):
        M.load(tiny_ckpt, expect_sha256="f" * 64)
    assert M.load(tiny_ckpt, expect_sha256="f" * 64, allow_mismatch=True).checkpoint_sha256 == sha


def test_profile_and_evaluate_record_the_loaded_checkpoint(tiny_ckpt):
    from model.profile import _checkpoint_sha

    m = M.load(tiny_ckpt)
    assert _checkpoint_sha(m) == _sha(tiny_ckpt)


# ---- profiles vs the model -------------------------------------------------------------------------

def _with_l12(prof: dict, n_layer_key: str, n_layer: int) -> dict:
    """``prof`` plus a record named L12-H100-fp32 of depth 12, with the model's layer count recorded."""
    rec = dict(prof["configs"][0], name="L12-H100-fp32", depth=12, heads=1.0, bits=32)
    return {**prof, "configs": prof["configs"] + [rec],
            "model": {**prof["model"], "arch": {n_layer_key: n_layer}}}


@pytest.mark.parametrize("key", ["n_layer", "n_layers"])
def test_profile_depth_beyond_the_models_layers_is_refused(key):
    prof = _with_l12(example_profile(12), key, 6)
    with pytest.raises(ProfileError, match=rf"configs\[12\]\.depth.*'L12-H100-fp32'.*{key} = 6"):
        validate_profile(prof)
    validate_profile(_with_l12(example_profile(12), key, 12))  # a 12-layer model has it


@pytest.fixture(scope="module")
def live_model(tiny_ckpt):
    return M.load(tiny_ckpt)


def _live_profile(m, **model_fields) -> dict:
    prof = example_profile(3)  # L1-H100-{fp32,int8,int4}: configurations of the tiny model
    prof["model"] = {**prof["model"], "checkpoint_sha256": m.checkpoint_sha256, **model_fields}
    return prof


def test_live_refuses_a_stale_checkpoint_sha(live_model):
    from envs.live import LiveMicroLLMPowerEnv

    LiveMicroLLMPowerEnv(model=live_model, profile=_live_profile(live_model))  # the profile's checkpoint: fine
    stale = _live_profile(live_model, checkpoint_sha256="a" * 64)
    with pytest.raises(ValueError, match="allow-checkpoint-change"):
        LiveMicroLLMPowerEnv(model=live_model, profile=stale)
    LiveMicroLLMPowerEnv(model=live_model, profile=stale, allow_checkpoint_change=True)


def test_live_refuses_configurations_the_model_does_not_have(live_model):
    from envs.live import LiveMicroLLMPowerEnv

    prof = _with_l12(_live_profile(live_model), "n_layers", 12)
    with pytest.raises(ValueError, match="'L12-H100-fp32'.*not a configuration of the live model"):
        LiveMicroLLMPowerEnv(model=live_model, profile=prof)


def test_live_main_refuses_a_checkpoint_that_is_not_the_profiles(live_model, tiny_ckpt, tmp_path, capsys):
    from envs.live import main

    prof = save_profile(_live_profile(live_model, checkpoint_sha256="b" * 64), tmp_path / "p.json")
    with pytest.raises(SystemExit, match="sha256"):
        main(["--profile", str(prof), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "s2r.md"),
              "--tokens", "2", "--repeats", "1", "--threads", "1"])
    assert not (tmp_path / "s2r.md").exists()


# ---- traces given from code --------------------------------------------------------------------------

def test_traces_from_code_are_validated_naming_trace_and_field():
    import traces as T
    from envs.power_env import MicroLLMPowerEnv

    tr = T.TraceSet.load(T.default_trace_set_dir()).split("train")[0]
    amb = np.array(tr.ambient_c, dtype=float)
    amb[3] = math.nan
    bad = tr.replace(name="nan-ambient", ambient_c=amb)
    with pytest.raises(T.TraceValidationError, match=r"nan-ambient.*ambient_c"):
        MicroLLMPowerEnv(profile=example_profile(12), traces=[bad])
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=[tr])  # the valid one still works
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all()


# ---- argument ranges of model.profile and envs.live (in process: fails before loading a model) ------

def _no_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(M, "load", boom)
    monkeypatch.setattr(M, "load_default", boom)


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--decode-tokens", "-1"], ["--threads", "0"],
                                  ["--prefill-tokens", "0"], ["--idle-power-w", "-1"]])
def test_model_profile_ranges(argv, tmp_path, monkeypatch, capsys):
    from model.profile import main

    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "p.json"), *argv])
    assert e.value.code == 2 and argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--tokens", "0"], ["--repeats", "0"], ["--threads", "-2"]])
def test_envs_live_ranges(argv, tmp_path, monkeypatch, capsys):
    from envs.live import main

    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "s2r.md"), *argv])
    assert e.value.code == 2 and argv[0] in capsys.readouterr().err


def test_model_profile_refuses_to_replace_a_file(tmp_path, monkeypatch):
    from model.profile import main

    _no_model(monkeypatch)
    out = tmp_path / "p.json"
    out.write_text("{}")
    with pytest.raises(SystemExit, match="--force"):
        main(["--out", str(out)])
    assert json.loads(out.read_text()) == {}
