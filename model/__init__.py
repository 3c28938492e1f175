"""wattwise.model: the elastic micro-LLM, its training, quality evaluation and cost profiling.

Public surface::

    from model import load_default
    m = load_default()                 # the committed checkpoint, every configuration prepared
    m.configs()                        # every configuration: Config(depth, heads, bits) of m.space
    m.set_config((4, 0.5, 8))          # or m.set_config("L4-H050-int8") or an index into m.space
    m.generate("In the beginning", 100)

Heavy imports (torch) are lazy: ``import model.profile_schema`` or ``import model.scaling``
does not import torch; ``from model import load_default`` does.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "microlm.pt"
__all__ = ["load_default", "load", "ModelConfig", "ElasticGPT", "DEFAULT_CHECKPOINT", "CheckpointError",
           "CheckpointMismatchError"]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed or holds non-finite weights (the message names the
    file and, where it can, the tensor)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's sha256 is not the expected one (e.g. the one the profile was measured on)."""


def load(path: str | Path, expect_sha256: str | None = None, allow_mismatch: bool = False):
    """Load an ElasticGPT checkpoint (weights only: nothing is unpickled).

    The file is read once; its sha256 is ``m.checkpoint_sha256`` (what ``model.profile`` and
    ``model.evaluate`` record). Every weight must be finite, and when the checkpoint stores a digest
    of its tensors (``meta["state_sha256"]``, written by ``ElasticGPT.checkpoint``) it must match.

    Args:
        path: the checkpoint file.
        expect_sha256: the sha256 the file must have (e.g. a profile's ``model.checkpoint_sha256``).
        allow_mismatch: accept a different (but valid) checkpoint than ``expect_sha256``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: the sha256 differs from ``expect_sha256`` (and not ``allow_mismatch``).
        CheckpointError: unreadable, not a wattwise checkpoint, or a non-finite tensor (named).
    """
    import hashlib
    import io

    import torch

    from model.model import ElasticGPT, state_digest

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint; train one with python -m model.train")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and sha != expect_sha256 and not allow_mismatch:
        raise CheckpointMismatchError(
            f"{path}: checkpoint sha256 {sha[:12]}... is not the expected {str(expect_sha256)[:12]}... (the "
            "checkpoint the profile was measured on); fix: use that checkpoint, re-profile this one with "
            "python -m model.profile, or accept the change explicitly (--allow-checkpoint-change)")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupted zip / pickle stream: say so, not a deep traceback
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                              "the file is corrupted or not a wattwise checkpoint") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or "model_config" not in ckpt:
        raise CheckpointError(f"{path}: not a wattwise checkpoint (needs model_config and state_dict)")
    for name, t in ckpt["state_dict"].items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: tensor {name!r} has {bad} non-finite value(s) (NaN/inf): the "
                                  "checkpoint is corrupted; restore it or train again (python -m model.train)")
    want = (ckpt.get("meta") or {}).get("state_sha256") if isinstance(ckpt.get("meta"), dict) else None
    if want is not None and state_digest(ckpt["state_dict"]) != want:
        raise CheckpointError(f"{path}: the weights do not match the checkpoint's own digest (meta.state_sha256): "
                              "the file is corrupted (e.g. flipped bytes); restore it or train again "
                              "(python -m model.train)")
    try:
        m = ElasticGPT.from_checkpoint(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not build an ElasticGPT ({type(exc).__name__}: "
                              f"{str(exc)[:300]})") from None
    m.checkpoint_path = str(path)
    m.checkpoint_sha256 = sha
    return m


def load_default():
    """The committed checkpoint, ready to use (every configuration packed and resident)."""
    return load(DEFAULT_CHECKPOINT)


def __getattr__(name: str):
    if name in ("ModelConfig", "ElasticGPT"):
        from model import model as _m

        return getattr(_m, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
