"""Variance reduction per unit of compute: each method preset's total variance x its cost, relative to Standard.

    python benchmarks/perf/variance_per_compute.py [--config benchmarks/variance_tiny.yaml] [--a 8 --b 16 --c 6]
                                                   [--step-json results/perf/step_overhead.json] [--json OUT]

For every preset of `mdm methods`, the variance profiler behind `mdm variance` (mdm.variance, same model, same
clean sequences, same masks seeds) measures the total variance of the training loss, and (`--gradient` mode of
`mdm variance`) of the per-sample gradient of the last block's Linear weights (randomly projected). A method that
spends k forward/backward passes per sequence could instead average k independent Standard draws, dividing
Standard's variance by k; so the fair figure of merit is

    variance x cost / (Standard's variance x 1)       (< 1: the method beats spending the same compute on Standard)

with cost = passes per sequence (`mdm methods`) or the measured step-time ratio from step_overhead.py's JSON.
The pilot sizes are small (a quick CPU run): read the ratios with their bootstrap SE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def profile_all(loaded, spec, methods, a, b, c, gradient: bool, bootstrap: int) -> dict:
    from mdm.errors import ConfigError
    from mdm.profiling.spec import pick_x0
    from mdm.variance.profile import Profiler, run_variance

    x0 = pick_x0(loaded.items, a, spec.seed, loaded.tokenizer, spec.data.task, spec.data.max_length)
    profiler = Profiler(loaded.model, x0, mask_token_id=loaded.mask_token_id, b=b, c=c, grid=spec.pilot.grid,
                        seed=spec.seed, token_budget=spec.pilot.token_budget,
                        gradient=spec.gradient.model_dump() if gradient else None)
    rows = {}
    start = time.perf_counter()
    for m in methods:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = run_variance(profiler, ["standard", m] if m != "standard" else ["standard"],
                                   batch_size=spec.pilot.batch_size, bootstrap=bootstrap,
                                   fit_options=spec.fit.model_dump())
        except (ConfigError, ValueError) as e:
            rows[m] = {"error": str(e).splitlines()[0]}
            continue
        entry = out["methods"][m]
        vs = entry.get("vs_standard", {})
        rows[m] = {"total": entry["total"], "total_se": entry["total_se"], "passes": entry["passes"],
                   "unbiased": entry.get("unbiased"),
                   "ratio": vs.get("total_ratio", 1.0), "ratio_se": vs.get("total_ratio_se", 0.0),
                   "notes": sorted({str(w.message).split(": ", 1)[-1] for w in caught
                                    if "not profiled" in str(w.message)})}  # fmt: skip
    return {"a": a, "b": b, "c": c, "mode": "gradient" if gradient else "loss", "rows": rows,
            "forward_rows": profiler.forward_rows, "seconds": time.perf_counter() - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "benchmarks" / "variance_tiny.yaml"))
    ap.add_argument("--methods", default="all", help="comma list or 'all' (every preset of `mdm methods`)")
    ap.add_argument("--a", type=int, default=8)
    ap.add_argument("--b", type=int, default=16)
    ap.add_argument("--c", type=int, default=6)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--no-gradient", action="store_true", help="loss variance only")
    ap.add_argument("--step-json", type=Path, help="step_overhead.py JSON: adds the measured step-time cost factor")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import mdm.variance  # noqa: F401
    from mdm.objective.method import PRESETS
    from mdm.profiling.spec import load, load_spec

    methods = list(PRESETS) if args.methods == "all" else [m for m in args.methods.split(",") if m]
    spec = load_spec(args.config)
    loaded = load(spec, progress=False)
    step_ratio = {}
    if args.step_json and args.step_json.exists():
        step_ratio = {r["method"]: r["ratio_per_step"] for r in json.loads(args.step_json.read_text())["rows"]}
        base = step_ratio.get("standard", 1.0)
        step_ratio = {k: v / base for k, v in step_ratio.items()}  # relative to Standard's own step
    result = {"model": loaded.model_id, "data": loaded.data_id, "config": args.config, "step_json": str(args.step_json)}
    result["loss"] = profile_all(loaded, spec, methods, args.a, args.b, args.c, False, args.bootstrap)
    if not args.no_gradient:
        g = spec.gradient
        result["gradient"] = profile_all(loaded, spec, methods, g.a, g.b, g.c, True, args.bootstrap)
    for mode in ("loss", "gradient"):
        for m, r in result.get(mode, {}).get("rows", {}).items():
            if "error" in r:
                continue
            r["per_compute_passes"] = r["ratio"] * r["passes"]
            if m in step_ratio:
                r["step_cost"] = step_ratio[m]
                r["per_compute_time"] = r["ratio"] * step_ratio[m]
    print(f"model {loaded.model_id}; variance ratio to Standard x cost (< 1: better than spending the compute on "
          f"Standard)")
    print(f"{'method':<22}{'mode':>9}{'var/std':>9}{'+-SE':>7}{'passes':>8}{'x passes':>10}{'x time':>8}")
    for mode in ("loss", "gradient"):
        for m, r in result.get(mode, {}).get("rows", {}).items():
            if "error" in r:
                print(f"{m:<22}{mode:>9}  not profiled: {r['error']}")
                continue
            t = f"{r['per_compute_time']:>8.3f}" if "per_compute_time" in r else f"{'':>8}"
            print(f"{m:<22}{mode:>9}{r['ratio']:>9.3f}{r['ratio_se']:>7.3f}{r['passes']:>8.2f}"
                  f"{r['per_compute_passes']:>10.3f}{t}")
    if args.json:
        from mdm.variance.profile import finite_or_none

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite_or_none(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
