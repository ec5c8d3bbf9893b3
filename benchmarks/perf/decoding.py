"""Decoding strategies, speed against accuracy: every strategy, tau and cache on trained tiny runs, paired per prompt
against the paper's (exact) decoding on the same test prompts; and, on the tiny LLaDA architecture (the real
remote code, random weights), the cached logits against uncached ones.

    python benchmarks/perf/decoding.py --run arith=RUN_DIR --run tables=RUN_DIR --run arithlong=RUN_DIR \
        [--n 1112 --taus 0.5,0.7,0.8,0.9,0.95,0.99 --factors 0.5,1,2 --caches none,prefix,dual --batch-size 16] \
        [--llada] --threads 1 --json results/perf/raw/decoding.json --plot results/perf/decoding.png

Per setting and task: accuracy (the task's primary score per prompt: GSM8K-strict 0/1 for arith, per-prompt HiTab
accuracy for tables), its paired difference to exact decoding with a 95% interval (mean +- 1.96 SD / sqrt(n) of
the per-prompt differences), model calls per item (the calls the prompt needed: `steps_run`, as if decoded alone),
token-forwards per item (rows x forwarded columns over all calls, / n; a cached step forwards only the block, or
the block and what follows), and wall time of the whole decoding (batch `--batch-size`, 1 thread). The exact
decoding is run first and timed in the same process. A run is decoded with the knobs of its own eval
(gen_length / steps / block_length of the run's config). Runs: `mdm bench benchmarks/table1.yaml --only
task=arith,method=standard,seed=42` (and tables), `mdm bench benchmarks/decoding.yaml` (arithlong).

`mdm.decoding.measured_calls_ratio` reads the rows this writes (a dry-run's evaluation estimate).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mdm.adapters import checked  # noqa: E402
from mdm.adapters.kv import kv_forward  # noqa: E402
from mdm.data import make_task, mask_token_id_of  # noqa: E402
from mdm.decoding import decoding_key  # noqa: E402
from mdm.eval.api import decode_config_for, load_model, normalize_settings, run_record, score_predictions  # noqa: E402
from mdm.sampler import DecodeConfig, chat_prompt_ids, decode_text, generate  # noqa: E402


def per_prompt(task_spec, per: list[dict]) -> list[float]:
    if task_spec.metric == "gsm8k":
        return [float(r["strict"]) for r in per]
    if task_spec.metric == "hitab":
        return [r["correct"] / max(r["n_gold"], 1) for r in per]
    return [float(r["correct"]) for r in per]


def settings(args) -> list[dict]:
    out = [{}]  # exact first: the baseline
    out += [{"cache": c} for c in args.caches if c != "none"]
    for cache in args.caches:
        out += [{"strategy": "threshold", "threshold": t, "cache": cache} for t in args.taus]
        out += [{"strategy": "factor", "factor": f, "cache": cache} for f in args.factors]
    return out


def bench_run(task: str, run_dir: str, args) -> list[dict]:
    model, tok, model_dir = load_model(run_dir, "cpu", "float32")
    _, record = run_record(Path(run_dir), model_dir)
    cfg = normalize_settings({"tasks": [task], "n": args.n, "likelihood": False}, record)
    base = decode_config_for(task, cfg["decoding"])
    from mdm.data.tasks import get_task

    spec = get_task(task, cfg["task_options"])
    examples = make_task(task, "test", args.n, seed=cfg["data_seed"], **cfg["task_options"])
    prompts = [chat_prompt_ids(tok, e["prompt"], e.get("messages")) for e in examples]
    mask_id = mask_token_id_of(tok, model.config)
    rows, exact = [], None
    for knobs in settings(args):
        config = DecodeConfig.from_dict(knobs, base=base)
        t0 = time.perf_counter()
        out = generate(model, prompts, config, mask_token_id=mask_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, batch_size=args.batch_size, vocab_size=len(tok))  # fmt: skip
        wall = time.perf_counter() - t0
        preds = [decode_text(tok, t) for t in out.tokens]
        scores, per = score_predictions(spec, preds, examples)
        y = per_prompt(spec, per)
        row = {"task": task, "decoding": decoding_key(config.to_dict()), "knobs": config.to_dict(), "n": len(y),
               "accuracy": 100 * sum(y) / len(y), "calls_per_item": sum(out.steps_run) / len(y),
               "model_calls": out.forward_passes, "token_forwards_per_item": out.token_forwards / len(y),
               "wall_s": wall, "outcomes": y}  # fmt: skip
        if exact is None:
            exact = row
        d = [a - b for a, b in zip(y, exact["outcomes"])]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((v - mean) ** 2 for v in d) / max(len(d) - 1, 1))
        half = 1.96 * sd / math.sqrt(len(d))
        row |= {"diff_points": 100 * mean, "ci95_points": [100 * (mean - half), 100 * (mean + half)],
                "calls_ratio": row["calls_per_item"] / exact["calls_per_item"],
                "calls_speedup": exact["calls_per_item"] / row["calls_per_item"],
                "token_forward_speedup": exact["token_forwards_per_item"] / row["token_forwards_per_item"],
                "wall_speedup": exact["wall_s"] / wall, "same_outputs_as_exact": d == [0.0] * len(d)}  # fmt: skip
        print(f"{task:10s} {row['decoding']:22s} acc {row['accuracy']:6.2f}  diff {row['diff_points']:+6.2f} "
              f"[{row['ci95_points'][0]:+.2f}, {row['ci95_points'][1]:+.2f}]  calls/item {row['calls_per_item']:6.2f} "
              f"({row['calls_speedup']:.2f}x)  tok-fwd {row['token_forward_speedup']:.2f}x  wall {wall:6.1f} s "
              f"({row['wall_speedup']:.2f}x)", flush=True)
        rows.append(row)
    for r in rows:
        r.pop("outcomes")
    return rows


def fastest_within(rows: list[dict], band: float = 1.0) -> dict:
    """Per task: the setting with the most calls saved whose paired 95% interval lies inside [-band, +band]."""
    best = {}
    for r in rows:
        lo, hi = r["ci95_points"]
        if -band <= lo and hi <= band and r["calls_speedup"] > best.get(r["task"], {}).get("calls_speedup", 0):
            best[r["task"]] = r
    return {t: {k: r[k] for k in ("decoding", "accuracy", "diff_points", "ci95_points", "calls_per_item",
                                  "calls_speedup", "token_forward_speedup", "wall_speedup")} for t, r in best.items()}


# ---------------------------------------------------------------- tiny LLaDA: the approximation's size


@torch.no_grad()
def llada_approximation(n_prompts: int = 8, gen_length: int = 32, block_length: int = 8) -> dict:
    """Tiny LLaDA (remote code, random weights, 2 layers): decode one token per step (exact schedule) and, at every
    step, compare the cached logits of the block (prefix / dual cache made at the block's start) with the uncached
    forward on the same canvas: max |diff| relative to the largest logit, and the share of masked positions whose
    argmax differs; separately for the block's first step (the refresh: the full forward) and the later steps."""
    from mdm.adapters import load_model as load_folder
    from tests.llada_fixture import llada_folder

    folder = llada_folder(Path(tempfile.mkdtemp()) / "llada", "llada")
    model, tok = load_folder(folder, causal=False, dtype=torch.float32)
    mask_id = tok.get_vocab()["<|mdm_mask|>"]
    adapter = checked(model)
    kv = kv_forward(model, adapter, "dual")
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n_prompts, seed=3)]
    stats = {m: {"start": [], "later": [], "argmax_flip": []} for m in ("prefix", "dual")}
    for p in prompts:
        x = torch.full((1, len(p) + gen_length), mask_id)
        x[0, : len(p)] = torch.tensor(p)
        pos = torch.arange(x.shape[1])[None]
        for s in range(len(p), x.shape[1], block_length):
            e = s + block_length
            _, cache = kv(x, pos, None)
            for step in range(block_length):
                ref = adapter.logits(model, x, None)[:, s:e].float()
                scale = float(ref.abs().max())
                masked = x[0, s:e] == mask_id
                for mode, (lo, hi) in {"prefix": (s, x.shape[1]), "dual": (s, e)}.items():
                    got = kv(x[:, lo:hi], pos[:, lo:hi], None, keep=(s - lo, e - lo), cache=cache, span=(lo, hi))
                    stats[mode]["start" if step == 0 else "later"].append(float((got - ref).abs().max()) / scale)
                    if step and masked.any():
                        flip = (got.argmax(-1)[0] != ref.argmax(-1)[0])[masked].float().mean()
                        stats[mode]["argmax_flip"].append(float(flip))
                conf = torch.softmax(ref[0].double(), -1).max(-1).values.masked_fill(~masked, -1)
                i = int(conf.argmax())
                x[0, s + i] = int(ref[0, i].argmax())
    out = {mode: {"block_start_max_rel_diff": max(v["start"]), "later_steps_max_rel_diff": max(v["later"]),
                  "later_steps_mean_rel_diff": sum(v["later"]) / len(v["later"]),
                  "later_steps_argmax_flip_share": sum(v["argmax_flip"]) / max(len(v["argmax_flip"]), 1)}
           for mode, v in stats.items()}  # fmt: skip
    calls = {}
    for knobs in ({}, {"cache": "prefix"}, {"cache": "dual"}, {"strategy": "threshold", "threshold": 0.9},
                  {"strategy": "threshold", "threshold": 0.9, "cache": "dual"}):
        config = DecodeConfig(gen_length=gen_length, steps=gen_length, block_length=block_length, **knobs)
        o = generate(model, prompts, config, mask_token_id=mask_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, vocab_size=len(tok), batch_size=n_prompts)  # fmt: skip
        calls[decoding_key(config.to_dict())] = {"model_calls": o.forward_passes,
                                                 "calls_per_item": sum(o.steps_run) / len(prompts),
                                                 "token_forwards_per_item": o.token_forwards / len(prompts)}
    return {"n_prompts": n_prompts, "gen_length": gen_length, "block_length": block_length, "layers": 2,
            "approximation": out, "calls": calls}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(5.5 * len(tasks), 10), 4.6), squeeze=False)
    marker = {"none": "o", "prefix": "s", "dual": "^"}
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in data["rows"] if r["task"] == task]
        for r in rows:
            cache = r["knobs"].get("cache", "none")
            color = {"exact": "black", "threshold": "tab:blue", "factor": "tab:orange"}[r["knobs"].get("strategy", "exact")]
            lo, hi = r["ci95_points"]
            ax.errorbar(r["calls_speedup"], r["diff_points"], yerr=[[r["diff_points"] - lo], [hi - r["diff_points"]]],
                        fmt=marker[cache], color=color, ms=5, capsize=2, alpha=0.8)
            knob = r["knobs"].get("threshold", r["knobs"].get("factor"))
            if knob is not None and cache == "none":
                ax.annotate(f"{knob:g}", (r["calls_speedup"], r["diff_points"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.axhspan(-1, 1, color="tab:green", alpha=0.1)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("model calls saved (exact calls / calls), log2")
        ax.set_ylabel("accuracy - exact (points, paired 95% CI)")
        ax.set_title(f"{task} (n={rows[0]['n']}; exact {rows[0]['accuracy']:.1f}%)")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="") for c in ("black", "tab:blue", "tab:orange")] + \
        [plt.Line2D([], [], color="grey", marker=m, ls="") for m in marker.values()]
    fig.legend(handles, ["exact", "threshold (tau)", "factor", "no cache", "prefix cache", "dual cache"],
               loc="lower center", ncol=6, fontsize=8)
    fig.suptitle("Decoding strategies on tiny runs: model calls saved vs accuracy (green band: +-1 point)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], metavar="TASK=RUN_DIR")
    ap.add_argument("--n", type=int, default=1112)
    ap.add_argument("--taus", default="0.5,0.7,0.8,0.9,0.95,0.99")
    ap.add_argument("--factors", default="0.5,1,2")
    ap.add_argument("--caches", default="none,prefix,dual")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--llada", action="store_true", help="also the tiny LLaDA approximation and call counts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="rows of another run of this script (runs measured in parallel) to fold in")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.taus = [float(t) for t in args.taus.split(",") if t]
    args.factors = [float(f) for f in args.factors.split(",") if f]
    args.caches = [c for c in args.caches.split(",") if c]
    data = {"command": "python benchmarks/perf/decoding.py " + " ".join(sys.argv[1:]),
            "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "threads": args.threads, "gpu": None},
            "rows": [], "runs": {}}  # fmt: skip
    if args.json.exists():  # runs measured before (another --run) are kept
        old = json.loads(args.json.read_text())
        keep = {r.split("=", 1)[0] for r in args.run}
        data["rows"] = [r for r in old.get("rows", []) if r["task"] not in keep]
        data["runs"] = {t: d for t, d in old.get("runs", {}).items() if t not in keep}
        data["llada"] = old.get("llada")
    for other in args.merge:
        old = json.loads(other.read_text())
        data["rows"] = [r for r in data["rows"] if r["task"] not in old["runs"]] + old["rows"]
        data["runs"] |= old["runs"]
        data["llada"] = old.get("llada") or data.get("llada")
        data["command"] += f"  # + {old['command'].removeprefix('python benchmarks/perf/decoding.py ')}"
    for item in args.run:
        task, run_dir = item.split("=", 1)
        data["runs"][task] = run_dir
        data["rows"] += bench_run(task, run_dir, args)
    data["fastest_within_1_point"] = fastest_within(data["rows"])
    if args.llada:
        data["llada"] = llada_approximation()
        print(json.dumps(data["llada"], indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data["fastest_within_1_point"], indent=1))
    if args.plot and data["rows"]:
        plot(data, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
