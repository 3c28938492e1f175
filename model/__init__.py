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
__all__ = ["load_default", "load", "ModelConfig", "ElasticGPT", "DEFAULT_CHECKPOINT"]


def load(path: str | Path):
    """Load an ElasticGPT checkpoint (weights only: nothing is unpickled)."""
    import torch

    from model.model import ElasticGPT

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint; train one with python -m model.train")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    m = ElasticGPT.from_checkpoint(ckpt)
    m.checkpoint_path = str(path)
    return m


def load_default():
    """The committed checkpoint, ready to use (every configuration packed and resident)."""
    return load(DEFAULT_CHECKPOINT)


def __getattr__(name: str):
    if name in ("ModelConfig", "ElasticGPT"):
        from model import model as _m

        return getattr(_m, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
