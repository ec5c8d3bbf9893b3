"""Decoding strategies: which masked positions of the current block a step commits, found by name.

    exact       LLaDA's schedule (the paper's decoding, the default): the k most confident, k from
                `num_transfer_schedule(block_length, steps_per_block)`
    threshold   Fast-dLLM's confidence-aware parallel decoding: every masked position of the block whose confidence
                exceeds `threshold` (tau), and at least the most confident one; a block ends when it has no mask left
                (at most block_length steps: `steps` does not apply)
    factor      Fast-dLLM's factor rule: the n most confident, n the largest with (r + 1) (1 - c_r) <= `factor` for
                every rank r <= n (c_r: the r-th highest confidence), and at least one

Orthogonal to the rule, `cache` (none | prefix | dual) reuses the keys and values of the prompt and finished blocks
(prefix) and of the masked suffix too (dual) within a block, refreshed when a block starts (`mdm.adapters.kv`).

Every score records its decoding; `decoding_key` names it ("exact" for the paper's decoding, e.g.
"threshold0.9+dual" otherwise): `mdm eval --decoding` keeps each key's result apart, and reports compare only
scores decoded alike. Torch-free (the rules live in `mdm.decoding.rules`, imported on first use).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mdm.errors import ConfigError
from mdm.registry import Registry

STRATEGIES = Registry("decoding strategy")
for _name in ("exact", "threshold", "factor"):
    STRATEGIES.register_lazy(_name, "mdm.decoding.rules")
CACHES = ("none", "prefix", "dual")
DEFAULT_KEY = "exact"
KNOBS = ("strategy", "threshold", "factor", "cache")  # DecodeConfig fields beyond LLaDA's


def decoding_key(decoding: dict | None) -> str:
    """The name scores decoded alike share: "exact" (the default), else strategy[knob][+cache]."""
    d = decoding or {}
    if d.get("sampler") not in (None, "llada"):
        return str(d["sampler"])  # autoregressive, none: one decoding each
    strategy, cache = d.get("strategy", "exact"), d.get("cache", "none")
    key = strategy + (f"{d['threshold']:g}" if strategy == "threshold" else "") + \
        (f"{d['factor']:g}" if strategy == "factor" else "")
    return key + ("" if cache == "none" else f"+{cache}")


def parse_decoding(text: str) -> dict:
    """`mdm eval --decoding` -> decoding knobs: comma-separated strategy names, cache names and key=value pairs,
    e.g. "threshold=0.9,cache=dual", "threshold,dual", "exact" (a bare threshold= / factor= picks its strategy)."""
    out: dict = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            if key in ("threshold", "factor"):
                try:
                    out[key] = float(value)
                except ValueError:
                    raise ConfigError("--decoding", f"{key} must be a number, got {value!r}") from None
                out.setdefault("strategy", key)
            elif key in ("strategy", "cache"):
                out[key] = value
            else:
                raise ConfigError("--decoding", f"unknown knob {key!r}; allowed: strategy, threshold, factor, cache "
                                  "(steps, block_length, ...: their own flags)")
        elif item in CACHES:
            out["cache"] = item
        else:
            out["strategy"] = item
    if "strategy" in out:
        STRATEGIES.get(out["strategy"], "--decoding")
    if out.get("cache", "none") not in CACHES:
        raise ConfigError("--decoding", f"unknown cache {out['cache']!r}; allowed: {', '.join(CACHES)}")
    return out


MEASURED = Path(__file__).resolve().parents[2] / "results" / "perf" / "raw" / "decoding.json"


def measured_calls_ratio(decoding: dict | None = None, task: str | None = None, path: str | Path | None = None) -> float | None:
    """Model calls per decoded item that `benchmarks/perf/decoding.py` measured for this decoding (its key) on the
    tiny task `task` (None: the mean over the tasks measured), as a fraction of the exact decoding's calls; None when
    not measured. For a dry-run's evaluation estimate: exact calls x this ratio. `$MDM_DECODING_MEASURED` or `path`
    points at another measurement file."""
    file = Path(path or os.environ.get("MDM_DECODING_MEASURED") or MEASURED)
    try:
        rows = json.loads(file.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return None
    key = decoding_key(decoding)
    ratios = [r["calls_ratio"] for r in rows if r["decoding"] == key and (task is None or r["task"] == task)]
    return sum(ratios) / len(ratios) if ratios else None
