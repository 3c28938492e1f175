"""Print what an environment is made of: knobs, configurations, actions, observations, parameters.

    python -m envs.describe [--profile P] [--traces DIR] [--lookahead N] [--json]

For the profile (default: the committed reference profile): every knob family of its
configuration space with its values, the number of configurations and how many each validity rule
removes, the action table (index, canonical name, knob values, measured throughput, energy per
token, quality), the observation table (index, feature, unit, min, max) and the environment
parameters (``runtime.dynamics.EnvParams``) with their defaults and meaning. With ``--traces``, the
device kinds of the trace set and their constants.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from typing import Any

from envs.tables import DEFAULT_PROFILE, load_cost_tables
from model.cli import field_docs
from runtime.dynamics import DEVICES, EnvParams, RewardWeights
from runtime.observation import params_layout


def describe(profile: Any = None, traces: str | None = None, lookahead: int = 0,
             thermal_obs: bool = False, thermal_cap: float = 0.0, rule_hint: bool = False) -> dict[str, Any]:
    """Everything the command prints, as a JSON-ready dict."""
    costs = load_cost_tables(profile if profile is not None else DEFAULT_PROFILE)
    sp = costs.space
    params = EnvParams(lookahead=lookahead, thermal_obs=thermal_obs, thermal_cap=thermal_cap, rule_hint=rule_hint)
    layout = params_layout(sp, params)
    docs, wdocs = field_docs(EnvParams), field_docs(RewardWeights)
    out: dict[str, Any] = {
        "profile": str(profile if profile is not None else DEFAULT_PROFILE),
        "knobs": [{"name": k.name, "values": list(k.values), "fragments": [k.fragment(v) for v in k.values],
                   "features": [f.name for f in k.features], "switch_cost_keys": list(k.switch_cost_keys),
                   "capability": k.capability, "doc": k.doc} for k in sp.knobs],
        "n_product": sp.n_product, "removed_by_rule": sp.removed_by_rule, "n_configs": len(sp),
        "actions": [{**row, "decode_tokens_per_s": round(float(costs.tps[i]), 1),
                     "energy_j_per_token": float(costs.ept_j[i]), "quality": round(float(costs.quality[i]), 4)}
                    for i, row in enumerate(sp.decode_table())],
        "observation": layout.table(),
        "env_params": [{"name": f.name, "default": getattr(params, f.name), "doc": docs.get(f.name, "")}
                       for f in fields(EnvParams) if f.name != "weights"]
        + [{"name": f"weights.{f.name}", "default": getattr(params.weights, f.name), "doc": wdocs.get(f.name, "")}
           for f in fields(RewardWeights)],
    }
    if traces is not None:
        import traces as T

        ts = T.TraceSet.load(traces)
        kinds = sorted({ts.get(n).meta.device_kind for n in ts.names})
        out["device_kinds"] = {k: asdict(DEVICES.get(k, DEVICES["default"])) for k in kinds}
    return out


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[j]) for r in cells) for j in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * x for x in w)] + [line(r) for r in cells[1:]])


def render(d: dict[str, Any]) -> str:
    """The human-readable form of :func:`describe`."""
    parts = [f"profile: {d['profile']}", "", "knob families:"]
    parts.append(_table([[k["name"], ", ".join(k["fragments"]), ", ".join(k["features"]),
                          ", ".join(k["switch_cost_keys"]) or "-", k["capability"] or "-", k["doc"]]
                         for k in d["knobs"]], ["knob", "values", "observation", "switch costs", "needs", "meaning"]))
    rules = ", ".join(f"'{r}' removes {n}" for r, n in d["removed_by_rule"].items()) or "no rules"
    parts += ["", f"configurations: {d['n_configs']} of {d['n_product']} in the product ({rules})", "",
              "action table:"]
    knobs = [k["name"] for k in d["knobs"]]
    parts.append(_table([[a["index"], a["name"], *[a[k] for k in knobs], a["decode_tokens_per_s"],
                          f"{a['energy_j_per_token']:.3g}", a["quality"]] for a in d["actions"]],
                        ["index", "name", *knobs, "tok/s", "J/token", "quality"]))
    parts += ["", "observation:"]
    parts.append(_table([[o["index"], o["name"], o["unit"], f"{o['min']:g}", f"{o['max']:g}"]
                         for o in d["observation"]], ["index", "feature", "unit", "min", "max"]))
    parts += ["", "environment parameters (train.py --env.<name>):"]
    parts.append(_table([[p["name"], p["default"], p["doc"]] for p in d["env_params"]],
                        ["name", "default", "meaning"]))
    if "device_kinds" in d:
        parts += ["", "device kinds in the trace set (runtime.dynamics.DEVICES, modelled):"]
        ks = list(next(iter(d["device_kinds"].values())).keys()) if d["device_kinds"] else []
        parts.append(_table([[k, *v.values()] for k, v in d["device_kinds"].items()], ["kind", *ks]))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.describe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=None, help="profile JSON (default: the committed reference profile)")
    ap.add_argument("--traces", default=None, help="trace-set folder: also list its device kinds")
    ap.add_argument("--lookahead", type=int, default=0, help="supply look-ahead steps in the observation")
    ap.add_argument("--thermal-obs", action="store_true",
                    help="with the thermal block (EnvParams.thermal_obs: the headroom in watts)")
    ap.add_argument("--thermal-cap", type=float, default=0.0,
                    help="the thermal block as fractions of the costliest configuration's power at the observed "
                         "demand, clipped to ±this "
                         "(EnvParams.thermal_cap; 0: watts)")
    ap.add_argument("--rule-hint", action="store_true",
                    help="with the rule hint (EnvParams.rule_hint: the schedutil-like rule's choice under the masks)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    a = ap.parse_args(argv)
    from model.profile_schema import ProfileError

    try:
        d = describe(a.profile, a.traces, a.lookahead, a.thermal_obs, a.thermal_cap, a.rule_hint)
    except (ProfileError, FileNotFoundError, ValueError) as exc:
        print(f"envs.describe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(d, indent=1) if a.json else render(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
