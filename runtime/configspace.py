"""The configuration space of the elastic model: every knob family declared once.

numpy + the standard library only, so the on-device runtime imports it too.

A **knob family** (:class:`Knob`) says, in one declaration,

* its values (the default grid; a space may narrow it, e.g. a profile that measured fewer),
* its canonical name fragment (``L4``, ``H050``, ``int8``) — a configuration's name is the
  fragments joined by ``-``, and names are only ever *made*, never parsed back,
* its observation encoding (features with unit and bounds; the observation's "current
  configuration" block is the concatenation over the space's knobs, so its length follows the
  number of knobs),
* which switch costs apply when it changes (keys of a profile's ``switch_costs``),
* the live capability it needs (e.g. a processor that must exist), or None.

A **configuration space** (:class:`ConfigSpace`) is an ordered list of knobs plus validity
rules (:class:`Rule`). Its configurations are the points of the product of the knobs' values,
in product order (the first knob varies slowest), that pass every rule. Each has exactly one
canonical name and one index; the index is the environment's action, the policy file's row
and the runtime's decision. A configuration is a :class:`Config` named tuple with one field per
knob (``cfg.depth``, ``cfg.bits``).

Adding a knob is one :func:`register_knob` call with its declaration (``docs/adding-a-knob.md``);
the profile schema, the environment, the exported policy and the runtime read it from here.
"""

from __future__ import annotations

import itertools
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runtime import placement as _placement

__all__ = ["Knob", "Rule", "ConfigSpace", "ConfigSpaceError", "Feature", "KNOBS", "SPLIT_LOCAL", "register_knob",
           "knob", "join_fragments", "model_space", "space_from_records", "split_rules", "split_space",
           "place_rules", "place_space"]


class ConfigSpaceError(ValueError):
    """A configuration space, a knob value or a serialised space is invalid (the message says how)."""


@dataclass(frozen=True)
class Feature:
    """One observation feature of a knob's encoding."""

    name: str  # observation feature name, e.g. "config_depth_frac"
    unit: str
    lo: float
    hi: float


@dataclass(frozen=True)
class Knob:
    """One knob family (module docstring).

    Attributes:
        name: Field name in profile records and in :class:`Config` (``depth``).
        values: Allowed values in declaration order (the order of the space's product).
        fragment: value → canonical name fragment (``4 → "L4"``); must be injective.
        features: The observation features this knob contributes (names, units, bounds).
        encode: (value, knob) → tuple of floats, one per feature, inside the bounds.
        switch_cost_keys: ``switch_costs`` keys of a profile (ms) that bound the compute time of a
            change of this knob; the largest present applies.
        capability: What a live device must offer to run a value of this knob (None: nothing).
        value_type: ``int``, ``float`` or ``str``: values read from JSON are converted with it.
        doc: One line for ``python -m envs.describe`` and the docs.
    """

    name: str
    values: tuple
    fragment: Callable[[Any], str]
    features: tuple[Feature, ...]
    encode: Callable[[Any, Knob], tuple[float, ...]]
    switch_cost_keys: tuple[str, ...] = ()
    capability: str | None = None
    value_type: type = float
    doc: str = ""

    def with_values(self, values: Iterable[Any]) -> Knob:
        """The same family over other values (e.g. the grid a profile measured)."""
        vals = tuple(self.value_type(v) for v in values)
        if not vals:
            raise ConfigSpaceError(f"knob {self.name!r}: needs at least one value")
        if len(set(vals)) != len(vals):
            raise ConfigSpaceError(f"knob {self.name!r}: duplicate values in {list(vals)}")
        frags = [self.fragment(v) for v in vals]
        if len(set(frags)) != len(frags):
            raise ConfigSpaceError(f"knob {self.name!r}: values {list(vals)} give duplicate name fragments {frags}")
        return replace(self, values=vals)

    def coerce(self, value: Any) -> Any:
        """``value`` as one of this knob's values (floats matched within 1e-9), else ConfigSpaceError."""
        for v in self.values:
            if v == value or (isinstance(v, float) and isinstance(value, (int, float))
                              and not isinstance(value, bool) and abs(v - value) < 1e-9):
                return v
        raise ConfigSpaceError(f"{self.name} {value!r} is not one of {list(self.values)}")


@dataclass(frozen=True)
class Rule:
    """A validity rule: configurations for which ``keep`` is False are not in the space."""

    name: str
    doc: str
    keep: Callable[[Any], bool]  # Config -> bool


# ---- the declared knob families --------------------------------------------------------------

KNOBS: dict[str, Knob] = {}


def register_knob(k: Knob) -> Knob:
    """Declare a knob family (once per name; re-registering the same name replaces it)."""
    if not k.name.isidentifier() or k.name.startswith("_") or k.name in ("index", "name"):
        raise ConfigSpaceError(f"knob name {k.name!r} must be a Python identifier, not 'index'/'name'")
    KNOBS[k.name] = k
    return k


def knob(name: str) -> Knob:
    """The declared family ``name`` (ConfigSpaceError naming the declared ones otherwise)."""
    try:
        return KNOBS[name]
    except KeyError:
        raise ConfigSpaceError(f"unknown knob family {name!r}; declared: {sorted(KNOBS)} "
                               "(a file written by a newer wattwise, or a knob registered elsewhere)") from None


def _frac_of_max(v: Any, k: Knob) -> tuple[float, ...]:
    return (float(v) / float(max(k.values)),)


register_knob(Knob(
    name="depth", values=(6, 4, 3, 2), value_type=int,
    fragment=lambda v: f"L{int(v)}",
    features=(Feature("config_depth_frac", "frac", 0.0, 1.0),),
    encode=_frac_of_max,
    switch_cost_keys=("depth_repair_ms", "depth_ms"),
    doc="transformer blocks that run (early exit); which ones: model.model.active_layers"))
register_knob(Knob(
    name="heads", values=(1.0, 0.75, 0.5, 0.25), value_type=float,
    fragment=lambda v: f"H{round(float(v) * 100):03d}",
    features=(Feature("config_heads_frac", "frac", 0.0, 1.0),),
    encode=lambda v, k: (float(v),),
    switch_cost_keys=("heads_repair_ms", "heads_ms"),
    doc="fraction of attention heads active in every running block"))
register_knob(Knob(
    name="bits", values=(32, 8, 4), value_type=int,
    fragment=lambda v: "fp32" if int(v) == 32 else f"int{int(v)}",
    features=(Feature("config_bits_frac", "frac", 0.0, 1.0),),
    encode=lambda v, k: (float(v) / 32.0,),
    switch_cost_keys=("bits_int8_repair_ms", "bits_int4_repair_ms", "bits_ms"),
    doc="weight precision of the blocks: fp32, int8 or group-wise int4"))

# Split computing (model/split.py, docs/split.md): the edge runs the embedding and the first ``split``
# running blocks, a server the rest over a link; ``wire`` is how the boundary activations travel.
SPLIT_LOCAL = -1  # the split value "everything on the device" (its name fragment is empty)
WIRE_NOMINAL_BITS = {"none": 0.0, "fp32": 32.0, "fp16": 16.0, "int8": 8.0, "tabq": 4.4}  # tabq: 141 B at d = 256

register_knob(Knob(
    name="split", values=(SPLIT_LOCAL, 2, 1, 0), value_type=int,
    fragment=lambda v: "" if int(v) == SPLIT_LOCAL else f"E{int(v)}",
    features=(Feature("config_offload", "flag", 0.0, 1.0), Feature("config_edge_layers_frac", "frac", 0.0, 1.0)),
    encode=lambda v, k: (0.0, 1.0) if int(v) == SPLIT_LOCAL else (1.0, min(int(v) / 6.0, 1.0)),
    switch_cost_keys=("split_reprefill_ms",),
    capability="split-server",
    doc="running blocks on the device (-1: all, no name fragment; 0: all on the server, token ids sent)"))
register_knob(Knob(
    name="wire", values=("none", "fp16", "int8", "tabq"), value_type=str,
    fragment=lambda v: "" if v == "none" else str(v),
    features=(Feature("config_wire_bits_frac", "frac", 0.0, 1.0),),
    encode=lambda v, k: (WIRE_NOMINAL_BITS.get(str(v), 32.0) / 32.0,),
    doc="compression of the boundary activations: none (local or ids), fp16, int8 per token, TS + TAB-Q"))

# Device placement (runtime/placement.py, docs/placement.md): which processor runs which contiguous
# segment of the running blocks; "cpu" (all on the big CPU cluster, all threads) has no name fragment.
def _place_encode(v: Any, k: Knob) -> tuple[float, ...]:
    p = _placement.parse(str(v))
    share = dict.fromkeys(_placement.ROLES, 0.0)
    if len(p) == 1:
        share[p[0][0]] = 1.0
        return (*share.values(), 1.0 if p[0][1] == 1 else 0.0, 0.0)
    (ra, _), cut, (rb, _) = p
    share[ra] = share[rb] = 0.5
    return (*share.values(), 0.0, min(cut / 6.0, 1.0))


register_knob(Knob(
    name="place", values=_placement.single_values(), value_type=str,
    fragment=lambda v: "" if v == _placement.PLACE_DEFAULT else str(v),
    features=tuple(Feature(f"config_on_{r}", "frac", 0.0, 1.0) for r in _placement.ROLES)
    + (Feature("config_cpu_one_thread", "flag", 0.0, 1.0), Feature("config_place_cut_frac", "frac", 0.0, 1.0)),
    encode=_place_encode,
    switch_cost_keys=("place_move_ms",),
    capability="processor",
    doc="processors of the running blocks: cpu (all threads), cpu.t1, lcpu, gpu, npu, or A:k:B (two segments)"))

#: The knobs of the elastic model, in the order of its canonical names.
MODEL_KNOBS: tuple[str, ...] = ("depth", "heads", "bits")
#: Profile ``switch_costs`` keys (µs) of the set_config call itself; the largest applies to any switch.
SET_CONFIG_SUFFIX = "_set_config_us"


# ---- the space -------------------------------------------------------------------------------

def join_fragments(frags: Iterable[str]) -> str:
    """A canonical name: the non-empty fragments joined by ``-`` (a knob at its "nothing special"
    value, e.g. ``split`` local, adds nothing, so local configurations keep their names)."""
    return "-".join(f for f in frags if f)


@dataclass(frozen=True, eq=False)
class ConfigSpace:
    """Knobs × validity rules → indexed, named configurations (module docstring)."""

    knobs: tuple[Knob, ...]
    rules: tuple[Rule, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [k.name for k in self.knobs]
        if not names:
            raise ConfigSpaceError("a configuration space needs at least one knob")
        if len(set(names)) != len(names):
            raise ConfigSpaceError(f"duplicate knobs in {names}")
        Cfg = namedtuple("Config", names)  # noqa: PYI024 - one field per knob, made per space
        c = self._cache
        c["Config"] = Cfg
        full = [Cfg(*p) for p in itertools.product(*(k.values for k in self.knobs))]
        removed: dict[str, int] = {}
        keep = full
        for r in self.rules:
            kept = [x for x in keep if r.keep(x)]
            removed[r.name] = len(keep) - len(kept)
            keep = kept
        if not keep:
            raise ConfigSpaceError(f"the rules {[r.name for r in self.rules]} remove every configuration")
        c["configs"] = tuple(keep)
        c["n_product"] = len(full)
        c["removed"] = removed
        c["names"] = tuple(join_fragments(k.fragment(v) for k, v in zip(self.knobs, x)) for x in keep)
        if len(set(c["names"])) != len(keep):
            raise ConfigSpaceError("two configurations share a canonical name; make the fragments unique")
        c["by_name"] = {n: i for i, n in enumerate(c["names"])}
        c["by_cfg"] = {x: i for i, x in enumerate(keep)}

    # ---- configurations ------------------------------------------------------------------
    @property
    def Config(self) -> type:  # noqa: N802 - a class
        """The named-tuple type of this space's configurations."""
        return self._cache["Config"]

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    @property
    def configs(self) -> tuple:
        """Every configuration, in index order."""
        return self._cache["configs"]

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical names, in index order."""
        return self._cache["names"]

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def n_product(self) -> int:
        """Points in the product of the knob values, before the rules."""
        return self._cache["n_product"]

    @property
    def removed_by_rule(self) -> dict[str, int]:
        """How many configurations each rule removed (in rule order)."""
        return dict(self._cache["removed"])

    def config(self, i: int):
        return self.configs[i]

    def name(self, i: int) -> str:
        return self.names[i]

    def make(self, **values: Any):
        """The configuration with these knob values (every knob given; floats matched within 1e-9)."""
        missing = [k.name for k in self.knobs if k.name not in values]
        extra = sorted(set(values) - set(self.knob_names))
        if missing or extra:
            raise ConfigSpaceError(f"configuration needs exactly the knobs {list(self.knob_names)} "
                                   f"(missing {missing}, unknown {extra})")
        cfg = self.Config(*(k.coerce(values[k.name]) for k in self.knobs))
        if cfg not in self._cache["by_cfg"]:
            raise ConfigSpaceError(f"{self.name_of(cfg)} is removed by the rules "
                                   f"{[r.name for r in self.rules if not r.keep(cfg)]}")
        return cfg

    def name_of(self, cfg: Any) -> str:
        """Canonical name of any point of the product (also one a rule removed)."""
        return join_fragments(k.fragment(v) for k, v in zip(self.knobs, cfg))

    def index(self, cfg: Any) -> int:
        """Index of a configuration given as a Config, a canonical name, a mapping of knob values or
        an index; ConfigSpaceError naming the known names otherwise."""
        c = self._cache
        if isinstance(cfg, (int, np.integer)) and not isinstance(cfg, bool):
            if not 0 <= int(cfg) < len(self):
                raise ConfigSpaceError(f"configuration index {cfg} outside 0..{len(self) - 1}")
            return int(cfg)
        if isinstance(cfg, str):
            if cfg not in c["by_name"]:
                raise ConfigSpaceError(f"no configuration named {cfg!r} in this space; known: {list(self.names)}")
            return c["by_name"][cfg]
        if isinstance(cfg, Mapping):
            return c["by_cfg"][self.make(**dict(cfg))]
        if isinstance(cfg, tuple) and len(cfg) == len(self.knobs):
            key = self.Config(*(k.coerce(v) for k, v in zip(self.knobs, cfg)))
            if key in c["by_cfg"]:
                return c["by_cfg"][key]
            raise ConfigSpaceError(f"{self.name_of(key)} is not in this space")
        raise ConfigSpaceError(f"cannot find a configuration from {cfg!r}")

    def values_of(self, i: int) -> dict[str, Any]:
        return dict(zip(self.knob_names, self.configs[i]))

    # ---- derived tables --------------------------------------------------------------------
    @property
    def features(self) -> tuple[Feature, ...]:
        """The observation's "current configuration" features, knob by knob."""
        return tuple(f for k in self.knobs for f in k.features)

    def feature_matrix(self) -> np.ndarray:
        """(n_configs, n_features) float64: every configuration's encoding."""
        if "feat" not in self._cache:
            rows = [[x for k, v in zip(self.knobs, cfg) for x in k.encode(v, k)] for cfg in self.configs]
            m = np.asarray(rows, dtype=np.float64).reshape(len(self), len(self.features))
            lo = np.array([f.lo for f in self.features])
            hi = np.array([f.hi for f in self.features])
            if ((m < lo) | (m > hi)).any():
                raise ConfigSpaceError("a knob's encoding leaves its declared feature bounds")
            m.flags.writeable = False
            self._cache["feat"] = m
        return self._cache["feat"]

    def decode_table(self) -> list[dict[str, Any]]:
        """One row per index: ``{"index", "name", <knob>: value, ...}`` (JSON-ready)."""
        return [{"index": i, "name": n, **self.values_of(i)} for i, n in enumerate(self.names)]

    def switch_time_s(self, switch_costs: Mapping[str, float]) -> np.ndarray:
        """(n, n) compute seconds of a switch i → j from a profile's ``switch_costs``.

        ``set_config`` (the largest ``*_set_config_us``) plus the largest repair among the knobs
        that change (each knob's largest ``switch_cost_keys`` entry, ms): the KV-cache repair
        re-runs the changed suffix of layers once, whatever changed in it. 0 on the diagonal.
        """
        set_s = max([float(v) for k, v in switch_costs.items() if k.endswith(SET_CONFIG_SUFFIX)] or [0.0]) / 1e6
        # (n, n_knobs): each configuration's value index per knob
        cfgs = np.array([[k.values.index(v) for k, v in zip(self.knobs, cfg)] for cfg in self.configs])
        n = len(self)
        rep = np.zeros((n, n))
        for j, k in enumerate(self.knobs):
            t = max([float(switch_costs[key]) for key in k.switch_cost_keys if key in switch_costs] or [0.0]) / 1e3
            changed = cfgs[:, j][:, None] != cfgs[:, j][None, :]
            rep = np.maximum(rep, t * changed)
        out = set_s + rep
        np.fill_diagonal(out, 0.0)
        return out

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"knobs": [{"name", "values"}], "rules": [names]}`` (rules are stored by name only)."""
        return {"knobs": [{"name": k.name, "values": list(k.values)} for k in self.knobs],
                "rules": [r.name for r in self.rules]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], rules: Sequence[Rule] = ()) -> ConfigSpace:
        """Inverse of :meth:`to_json`; knobs are looked up among the declared families.

        Rules named in ``data`` must be given in ``rules`` (they are code, not data).
        """
        try:
            knobs = tuple(knob(str(d["name"])).with_values(d["values"]) for d in data["knobs"])
        except (KeyError, TypeError) as exc:
            raise ConfigSpaceError(f"config_space must look like {{'knobs': [{{'name', 'values'}}]}}: {exc}") from None
        by_name = {r.name: r for r in rules}
        missing = [n for n in data.get("rules", []) if n not in by_name]
        if missing:
            raise ConfigSpaceError(f"config_space names rules {missing} that were not supplied")
        return cls(knobs, tuple(by_name[n] for n in data.get("rules", [])))

    def same_as(self, other: ConfigSpace) -> bool:
        """Same knobs, values and resulting configurations (names in the same order)."""
        return self.to_json()["knobs"] == other.to_json()["knobs"] and self.names == other.names


def model_space(depths: Iterable[int] = KNOBS["depth"].values, heads: Iterable[float] = KNOBS["heads"].values,
                bits: Iterable[int] = KNOBS["bits"].values) -> ConfigSpace:
    """The elastic model's space: depth (largest first) × heads × bits, as ``model.model`` offers."""
    return ConfigSpace((KNOBS["depth"].with_values(sorted(depths, reverse=True)),
                        KNOBS["heads"].with_values(heads), KNOBS["bits"].with_values(bits)))


def split_rules(depth_max_bits: int | None = None) -> tuple[Rule, ...]:
    """Validity rules of a space with ``split`` and ``wire`` (docs/split.md):

    * ``split_within_depth``: a split point lies inside the running blocks (``split < depth``), or
      the configuration is local;
    * ``wire_iff_activations``: activations travel (``wire != "none"``) exactly when ``split >= 1``
      (local sends nothing, ``split == 0`` sends token ids);
    * ``server_only_edge_bits``: with ``split == 0`` the device holds no block, so only the largest
      ``bits`` is offered (one name per distinct behaviour).
    """
    def within(c: Any) -> bool:
        return c.split == SPLIT_LOCAL or c.split < c.depth

    def wire(c: Any) -> bool:
        return (c.split >= 1) == (c.wire != "none")

    def bits(c: Any) -> bool:
        return c.split != 0 or depth_max_bits is None or c.bits == depth_max_bits

    return (Rule("split_within_depth", "split < depth, or local", within),
            Rule("wire_iff_activations", "wire is 'none' exactly when no activations travel", wire),
            Rule("server_only_edge_bits", "split 0 keeps only the largest bits", bits))


def split_space(base: ConfigSpace | None = None, splits: Iterable[int] = KNOBS["split"].values,
                wires: Iterable[str] = KNOBS["wire"].values) -> ConfigSpace:
    """``base`` (default :func:`model_space`) × split × wire under :func:`split_rules`."""
    base = base or model_space()
    bits = next((max(k.values) for k in base.knobs if k.name == "bits"), None)
    return ConfigSpace(base.knobs + (KNOBS["split"].with_values(splits), KNOBS["wire"].with_values(wires)),
                       base.rules + split_rules(bits))


def place_rules(has_split: bool = False) -> tuple[Rule, ...]:
    """Validity rules of a space with ``place`` (docs/placement.md):

    * ``place_within_depth``: a two-segment placement ``A:k:B`` needs ``1 ≤ k < depth``;
    * ``place_local_only`` (with ``split``): a split configuration runs its device share on the CPU
      (placement and split are not combined; the server side is the split's "other processor").

    Which processors a device has, which precisions each runs and what fits its memory are properties
    of the hardware, not of the space: the placement profile (``model.placement_profile``) writes a
    record only for the configurations the hardware can run, and the rule ``measured`` keeps those.
    """
    def within(c: Any) -> bool:
        p = _placement.parse(c.place)
        return len(p) == 1 or p[1] < c.depth

    rules = [Rule("place_within_depth", "a two-segment placement splits inside the running blocks", within)]
    if has_split:
        rules.append(Rule("place_local_only", "split configurations keep the default placement",
                          lambda c: c.split == SPLIT_LOCAL or c.place == _placement.PLACE_DEFAULT))
    return tuple(rules)


def place_space(base: ConfigSpace | None = None, values: Iterable[str] | None = None) -> ConfigSpace:
    """``base`` (default :func:`model_space`) × place under :func:`place_rules` (every placement value over
    every role by default: :func:`runtime.placement.all_values`)."""
    base = base or model_space()
    depth = max((max(k.values) for k in base.knobs if k.name == "depth"), default=6)
    vals = tuple(values) if values is not None else _placement.all_values(max_depth=depth)
    has_split = any(k.name == "split" for k in base.knobs)
    return ConfigSpace(base.knobs + (KNOBS["place"].with_values(vals),), base.rules + place_rules(has_split))


def in_records_rule(names: Iterable[str], knobs: Sequence[Knob]) -> Rule:
    """The rule "measured": a configuration is offered only if the profile has a record of it."""
    have = frozenset(names)

    def keep(cfg: Any) -> bool:
        return join_fragments(k.fragment(v) for k, v in zip(knobs, cfg)) in have

    return Rule("measured", "the profile has a record of it", keep)


def space_from_records(records: Sequence[Mapping[str, Any]], declared: Mapping[str, Any] | None = None) -> ConfigSpace:
    """The space of a profile's records.

    With ``declared`` (a profile's ``config_space``, :meth:`ConfigSpace.to_json`), its knobs and
    values; else every declared family whose field every record has, with its values in order of
    first appearance. A rule ``measured`` keeps the configurations the records cover. Each record's
    ``name`` must be the canonical name of its knob values.

    Raises:
        ConfigSpaceError: naming the record and the field.
    """
    if declared is not None:  # "measured" is re-derived from the records below
        knobs = ConfigSpace.from_json({**declared, "rules": [r for r in declared.get("rules", [])
                                                             if r != "measured"]}).knobs
    else:
        present = [n for n in KNOBS if records and all(n in r for r in records)]
        if not present:
            raise ConfigSpaceError(f"records carry none of the declared knob fields {sorted(KNOBS)}")
        knobs = []
        for n in present:
            k = KNOBS[n]
            seen: list[Any] = []
            for r in records:
                v = k.value_type(r[n])
                if not any(v == s or (isinstance(v, float) and abs(v - s) < 1e-9) for s in seen):
                    seen.append(v)
            knobs.append(k.with_values(seen))
        knobs = tuple(knobs)
    base = ConfigSpace(knobs)
    for i, r in enumerate(records):
        try:
            cfg = base.Config(*(k.coerce(k.value_type(r[k.name])) for k in knobs))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigSpaceError(f"configs[{i}]: {exc}") from None
        want = base.name_of(cfg)
        if r.get("name") != want:
            raise ConfigSpaceError(f"configs[{i}].name is {r.get('name')!r} but its knob values "
                                   f"{dict(zip(base.knob_names, cfg))} are named {want!r}; names are canonical "
                                   "(runtime.configspace): rename the record")
    return ConfigSpace(knobs, (in_records_rule((r["name"] for r in records), knobs),))
