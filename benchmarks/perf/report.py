"""The performance page: run every perf script (`--run`), then write results/perf/README.md and its plots.

    python benchmarks/perf/report.py --run [--out results/perf]     # what `make perf` does (CPU: ~10-15 min)
    python benchmarks/perf/report.py [--out results/perf]           # rewrite the page from the JSON already there

Each script writes its numbers to OUT/raw/NAME.json; this file turns them into one table (what was measured |
baseline | ratio/number | target | met? | machine | command) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from mdm.provenance import cpu_name  # noqa: E402
from mdm.report.plots import save_figure  # noqa: E402

PERF = "benchmarks/perf"

# name -> arguments (the JSON path is appended). Sizes are picked so the whole run takes < 20 min on 2 CPU cores.
SCRIPTS = {
    "step_overhead": f"{PERF}/step_overhead.py --methods all --batch 16 --length 256 --rounds 7 --threads 1",
    "train_throughput": f"{PERF}/train_throughput.py --steps 10 --warmup 2 --threads 1",
    "variance_per_compute": f"{PERF}/variance_per_compute.py --a 8 --b 16 --c 6 --threads 1 "
                            "--step-json results/perf/raw/step_overhead.json",
    "pilot_cost": f"{PERF}/pilot_cost.py --threads 1",
    "generation_throughput": f"{PERF}/generation_throughput.py --n 32 --batch-size 32 --gen-length 128 --steps 128 "
                             "--block-length 32 --threads 1",
    "scaling": f"{PERF}/scaling.py --lengths 64,128,256 --batches 1,4,16 --repeats 5 --threads 1",
    "gpu_mfu": f"{PERF}/gpu_mfu.py --length 512 --batch 8 --skip-without-cuda",
    "cli_startup": f"{PERF}/cli_startup.py --repeats 5",
}
JSON_FLAG = {"train_throughput": "--json-out"}


def command(name: str, out: Path) -> str:
    args = SCRIPTS[name].replace("results/perf", str(out))
    return f"python {args} {JSON_FLAG.get(name, '--json')} {out}/raw/{name}.json"


def run_all(out: Path) -> dict:
    (out / "raw").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    walls = {}
    for name in SCRIPTS:
        cmd = command(name, out)
        print(f"== {name}: {cmd}", flush=True)
        start = time.perf_counter()
        argv = shlex.split(cmd)
        argv[0] = sys.executable
        log = out / "raw" / f"{name}.log"
        with open(log, "w") as fh:
            rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        walls[name] = time.perf_counter() - start
        print(log.read_text()[-3000:], flush=True)
        if rc:
            raise SystemExit(f"{name} failed (exit {rc}); see {log}")
    (out / "raw" / "wall_seconds.json").write_text(json.dumps(walls, indent=2) + "\n")
    return walls


def machine() -> dict:
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": 1, "torch": torch.__version__,
            "python": platform.python_version()}


def load(out: Path, name: str):
    p = out / "raw" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


# ------------------------------------------------------------------------------------------------ plots


def plot_step_overhead(data, path: Path):
    import matplotlib.pyplot as plt

    rows = data["rows"]
    names = [r["method"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    w = 0.4
    ax.bar([i - w / 2 for i in x], [r["ratio_per_step"] for r in rows], w, label="per step (method / bare step)")
    ax.bar([i + w / 2 for i in x], [r["ratio_per_pass"] for r in rows], w,
           label="per forward/backward pass (step ratio / passes)")
    ax.axhline(1.1, color="tab:red", ls="--", lw=1, label="target 1.1x (1.05x for standard)")
    ax.axhline(2.1, color="tab:purple", ls=":", lw=1, label="target 2.1x per step (mirror, multisample2)")
    ax.set_xticks(list(x), names, rotation=40, ha="right")
    ax.set_ylabel("time ratio to the bare MDM step (x)")
    s = data["settings"]
    ax.set_title(f"Training-step overhead of each method preset (tiny model, batch {s['batch']} x {s['length']} tokens, "
                 f"1 CPU thread)", fontsize=10)
    ax.set_ylim(0, max(3.0, 1.3 * max(r["ratio_per_step"] for r in rows)))
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_variance(data, path: Path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.8))
    modes = [m for m in ("loss", "gradient") if m in data]
    names = [m for m, r in data["loss"]["rows"].items() if "error" not in r]
    w = 0.8 / (2 * len(modes))
    k = 0
    for mode in modes:
        rows = data[mode]["rows"]
        for key, label in (("per_compute_passes", "x passes"), ("per_compute_time", "x measured step time")):
            vals = [rows[m].get(key, float("nan")) if "error" not in rows[m] else float("nan") for m in names]
            errs = [rows[m].get("ratio_se", 0) * (vals[i] / rows[m]["ratio"] if rows[m].get("ratio") else 0)
                    if "error" not in rows[m] else 0 for i, m in enumerate(names)]
            ax.bar([i - 0.4 + w * (k + 0.5) for i in range(len(names))], vals, w, yerr=errs, capsize=2,
                   label=f"{mode} variance {label}")
            k += 1
    ax.axhline(1.0, color="k", lw=1, ls="--", label="Standard (1 pass)")
    top = max((b.get_height() for c in ax.containers if hasattr(c, "patches") for b in c.patches
               if b.get_height() == b.get_height()), default=1.0)
    ax.set_ylim(0, 1.45 * top)
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_ylabel("variance x cost / Standard (lower = better)")
    ax.set_title("Variance reduction per unit of compute (tiny warmed-up model, GSM8K; error bars: bootstrap SE)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_generation(data, path: Path):
    import matplotlib.pyplot as plt

    rows = data["rows"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(names, [rows[n]["examples_per_s"] for n in names], color="tab:blue")
    for b, n in zip(bars, names):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {rows[n]['speedup_vs_one_at_a_time']:.2f}x",
                va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("throughput (examples/s; label: speed-up vs mdm one-at-a-time)")
    s = data["settings"]
    ax.set_title(f"Generation throughput (tiny model, 1 CPU thread)\n{s['n']} prompts, gen_length {s['gen_length']}, "
                 f"{s['steps']} steps, block {s['block_length']}, batch {s['batch_size']}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)


def plot_pilot(data, path: Path):
    import matplotlib.pyplot as plt

    rows = data["counts"]["pilots"]
    labels = [f"{r['a']}x{r['b']}x{r['c']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    w = 0.4
    ax.bar([i - w / 2 for i in range(len(rows))], [r["pct_of_standard_sft"] for r in rows], w,
           label="% of a Standard SFT run")
    ax.bar([i + w / 2 for i in range(len(rows))], [r["pct_of_ppots_mirror_sft"] for r in rows], w,
           label="% of a P-POTS+MIRROR SFT run")
    ax.axhline(5, color="tab:red", ls="--", lw=1, label="target 5%")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("pilot size a x b x c (clean sequences x t values x masks)")
    ax.set_ylabel("pilot forward tokens / SFT forward-token units (%)")
    ax.set_title("P-POTS pilot cost vs one paper-preset GSM8K SFT run (5 epochs)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_scaling(data, path: Path):
    import matplotlib.pyplot as plt
    import numpy as np

    rows = data["rows"]
    keys = [("pilot_s", "pilot forward chunk"), ("train_s", "training step"), ("generate_step_s", "generation step")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    lengths = sorted({r["L"] for r in rows})
    for ax, (key, title) in zip(axes, keys):
        f = data["fits"][key]
        for L in lengths:
            sel = sorted((r for r in rows if r["L"] == L), key=lambda r: r["B"])
            B = np.array([r["B"] for r in sel], dtype=float)
            line = ax.plot(B, [1e3 * r[key] for r in sel], "o", label=f"L = {L} (measured)")[0]
            Bs = np.geomspace(B.min(), B.max(), 30)
            pred = f["overhead_ms"] + 1e-3 * f["per_token_us"] * Bs * L + 1e-6 * f["per_token_per_context_ns"] * Bs * L * L
            ax.plot(Bs, pred, "-", color=line.get_color(), lw=1, alpha=0.7, label=f"L = {L} (fit)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size B (sequences)")
        ax.set_ylabel("wall time (ms)")
        ax.set_title(f"{title}\n{f['overhead_ms']:.1f} ms + {f['per_token_us']:.1f} us/token + "
                     f"{f['per_token_per_context_ns']:.2f} ns/token/context", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling with sequence length L and batch B (tiny model, {data['params']:,} params, 1 CPU thread)",
                 fontsize=10)
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ table


def yes(ok) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def build_rows(out: Path, mach: str) -> tuple[list, list]:
    rows, notes = [], []

    def add(what, base, number, target, met, cmd, machine=mach):
        cmd = cmd.split(" --json")[0].replace("python benchmarks/perf/", "") if cmd else ""
        rows.append((what, base, number, target, met, machine, f"`{cmd}`" if cmd else ""))

    so = load(out, "step_overhead")
    if so:
        cmd = command("step_overhead", out)
        s = so["settings"]
        for r in so["rows"]:
            m = r["method"]
            num = f"{r['ratio_per_step']:.3f}x/step, {r['ratio_per_pass']:.3f}x/pass ({r['passes']:g} passes)"
            if "ratio_vs_bare_same_rows" in r:
                num += (f"; bare step on 2B rows = {r['bare_2x_over_bare']:.2f}x bare; method / bare-on-2B-rows = "
                        f"{r['ratio_vs_bare_same_rows']:.3f}x")
            if m == "standard":
                target, ok = "<= 1.05x/step", r["ratio_per_step"] <= 1.05
            elif m in ("mirror", "multisample2"):
                target, ok = "<= 2.1x/step", r["ratio_per_step"] <= 2.1
            elif r["passes"] > 1:
                target, ok = "<= 1.1x/pass", r["ratio_per_pass"] <= 1.1
            else:
                target, ok = "<= 1.1x/step", r["ratio_per_step"] <= 1.1
            add(f"training step time, `{m}` (tiny model, {s['batch']}x{s['length']}, median of {s['rounds']})",
                "bare hand-written MDM step, same batch", num, target, yes(ok), cmd)
    tt = load(out, "train_throughput")
    if tt:
        std = next((r for r in tt if r["method"] == "standard"), tt[0])
        for r in tt:
            add(f"trainer throughput, `{r['method']}` (tiny preset, arith)", "`standard` through the trainer",
                f"{r['tokens_per_s']:.0f} tok/s, {r['ms_per_step']:.1f} ms/step, {r['ms_per_pass']:.2f} ms/pass "
                f"({r['ms_per_pass'] / std['ms_per_pass']:.2f}x standard/pass), peak RSS {r['peak_rss_mb']:.0f} MB",
                "—", "n/a", command("train_throughput", out))
    vp = load(out, "variance_per_compute")
    if vp:
        cmd = command("variance_per_compute", out)
        loss, grad = vp["loss"]["rows"], vp.get("gradient", {}).get("rows", {})
        for m, r in loss.items():
            if m == "standard":
                continue
            if "error" in r:
                add(f"loss/gradient variance x cost, `{m}`", "Standard (1 pass)", f"not profiled: {r['error']}",
                    "< 1", "n/a", cmd)
                continue
            g = grad.get(m, {})
            parts = [f"loss {r['ratio']:.3f}+-{r['ratio_se']:.3f} var; x passes {r['per_compute_passes']:.3f}"]
            if "per_compute_time" in r:
                parts[0] += f", x step time {r['per_compute_time']:.3f}"
            if g and "error" not in g:
                gp = f"grad {g['ratio']:.3f}+-{g['ratio_se']:.3f} var; x passes {g['per_compute_passes']:.3f}"
                if "per_compute_time" in g:
                    gp += f", x step time {g['per_compute_time']:.3f}"
                parts.append(gp)
            flags = []
            if r.get("unbiased") is False:
                flags.append("biased objective: lower variance is not a like-for-like gain")
            flags += r.get("notes", [])
            if m == "ppots_adaptive":
                flags.append("profiled before its first refit (flat density = Standard)")
            if m == "syrm":
                flags.append("GSM8K prompts have no syntax tokens: same as Standard here")
            num = "; ".join(parts) + (f" ({'; '.join(flags)})" if flags else "")
            ok = r["per_compute_passes"] < 1 and (not g or "error" in g or g["per_compute_passes"] < 1)
            add(f"loss & gradient variance x cost, `{m}` (a,b,c = {vp['loss']['a']},{vp['loss']['b']},"
                f"{vp['loss']['c']}; grad {vp['gradient']['a']},{vp['gradient']['b']},{vp['gradient']['c']})",
                "Standard (variance x 1 pass)", num, "< 1 (beats spending the compute on Standard)", yes(ok), cmd)
    pc = load(out, "pilot_cost")
    if pc:
        cmd = command("pilot_cost", out)
        th = pc.get("throughput")
        if th:
            add(f"P-POTS pilot throughput (tiny model, {th['a']}x{th['b']}x{th['c']} rows, L<={th['length']})",
                "one pilot row per forward (reference's loop)",
                f"{th['speedup']:.2f}x ({th['batched']['rows_per_s']:.0f} vs {th['one_at_a_time']['rows_per_s']:.0f} "
                "rows/s)", "—", "n/a", cmd)
        for p in pc["counts"]["pilots"]:
            if (p["a"], p["b"], p["c"]) in ((15, 70, 15), (15, 35, 8)):
                tag = " (paper size)" if p["a"] * p["b"] * p["c"] == 15750 else ""
                add(f"P-POTS pilot cost {p['a']}x{p['b']}x{p['c']}{tag}",
                    "one paper-preset GSM8K SFT run (Standard; P-POTS+MIRROR in brackets)",
                    f"{p['pct_of_standard_sft']:.2f}% ({p['pct_of_ppots_mirror_sft']:.2f}%)", "< 5%",
                    yes(p["pct_of_standard_sft"] < 5), cmd, "token count (machine-independent)")
                if "pct_of_table_ppots_runs_shared" in p:
                    add(f"P-POTS pilot cost {p['a']}x{p['b']}x{p['c']}{tag}, cached and shared",
                        "a paper-preset table's 6 P-POTS runs per task (P-POTS and P-POTS+MIRROR x 3 seeds)",
                        f"{p['pct_of_table_ppots_runs_shared']:.2f}%", "< 5%",
                        yes(p["pct_of_table_ppots_runs_shared"] < 5), cmd, "token count (machine-independent)")
        ad = pc["adaptive"]
        add("adaptive P-POTS (`ppots_adaptive`) extra cost", "a tiny-model CPU training step (16x256)",
            f"{ad['extra_forward_passes']} extra forward passes; {ad['amortised_ms_per_step']:.2f} ms/step = "
            f"{ad['pct_of_step']:.2f}% of a step", "~0 extra passes", yes(ad["extra_forward_passes"] == 0), cmd)
    gt = load(out, "generation_throughput")
    if gt:
        cmd = command("generation_throughput", out)
        r = gt["rows"]
        one = r.get("mdm one-at-a-time")
        for name, row in r.items():
            if name == "mdm one-at-a-time":
                continue
            target, ok = ("—", None)
            if name == "mdm batched":
                target, ok = ">= 3x", row["speedup_vs_one_at_a_time"] >= 3
            add(f"generation throughput, {name} (tiny model, {gt['settings']['n']} prompts)",
                "mdm one-at-a-time (same sampler, batch_size=1)" if one else "—",
                f"{row['speedup_vs_one_at_a_time']:.2f}x ({row['examples_per_s']:.2f} vs "
                f"{one['examples_per_s'] if one else float('nan'):.2f} examples/s; {row['forward_passes']} model calls)",
                target, yes(ok), cmd)
        add("generation: batched outputs == one-at-a-time outputs", "—", str(gt["batched_equals_one_at_a_time"]),
            "True", yes(gt["batched_equals_one_at_a_time"]), cmd)
    cs = load(out, "cli_startup")
    if cs:
        cmd = command("cli_startup", out)
        torch_s = cs["rows"]["python -c 'import torch' (reference)"]["median_s"]
        for name, r in cs["rows"].items():
            if name.startswith("mdm"):
                add(f"CLI answer time, `{name}` (median of {cs['repeats']} fresh processes)",
                    "`python -c 'import torch'`, what every command paid before", f"{r['median_s']:.2f} s "
                    f"({r['median_s'] / torch_s:.2f}x of {torch_s:.2f} s)", f"< {cs['target_s']:g} s",
                    yes(r["median_s"] < cs["target_s"]), cmd)
    gm = load(out, "gpu_mfu")
    cmd = command("gpu_mfu", out)
    if gm and gm.get("measured"):
        add(f"1B bf16 MFU ({gm['device']}, batch {gm['batch']}x{gm['length']})", "H100 bf16 dense peak 989 TFLOP/s",
            f"{100 * gm['mfu']:.1f}% ({gm['achieved_tflops']:.0f} TFLOP/s)", "—", "n/a", cmd, gm["device"])
        add("1B peak memory", "—", f"{gm['peak_memory_gib']:.1f} GiB", "—", "n/a", cmd, gm["device"])
        add(f"1B largest batch at L={gm['length']}", "—", str(gm["largest_batch"]), "—", "n/a", cmd, gm["device"])
    else:
        for what in ("~1B model bf16 MFU (training step)", "~1B model peak memory", "~1B model largest batch"):
            add(what, "H100 bf16 peak 989 TFLOP/s" if "MFU" in what else "—", "not measured (no GPU lent)", "—",
                "n/a", cmd, "needs CUDA")
    dc = load(out, "decoding")  # needs trained tiny runs: not in SCRIPTS (its JSON records the command it ran)
    if dc:
        cmd = dc["command"].replace("python benchmarks/perf/", "")
        for task, b in sorted(dc["fastest_within_1_point"].items()):
            n = next(r["n"] for r in dc["rows"] if r["task"] == task)
            add(f"decoding, fastest setting within +-1 point of exact (tiny `{task}` run, {n} prompts)",
                "exact decoding (LLaDA's, one token per step), same prompts, paired per prompt",
                f"`{b['decoding']}`: {b['calls_speedup']:.2f}x fewer model calls ({b['calls_per_item']:.1f}/item), "
                f"{b['token_forward_speedup']:.2f}x fewer token-forwards, {b['wall_speedup']:.2f}x wall; accuracy "
                f"{b['accuracy']:.1f}%, diff {b['diff_points']:+.2f} [{b['ci95_points'][0]:+.2f}, "
                f"{b['ci95_points'][1]:+.2f}] points", ">= 4x calls", yes(b["calls_speedup"] >= 4), cmd)
        ll = dc.get("llada")
        if ll:
            ap = ll["approximation"]
            add(f"tiny LLaDA (remote code, random weights, {ll['layers']} layers): cached vs uncached block logits",
                "uncached forward on the same canvas",
                f"block start: {max(ap[m]['block_start_max_rel_diff'] for m in ap):.1e} (max rel.); later steps: "
                + "; ".join(f"{m} max {ap[m]['later_steps_max_rel_diff']:.2f}, mean {ap[m]['later_steps_mean_rel_diff']:.2f}, "
                            f"argmax flips {100 * ap[m]['later_steps_argmax_flip_share']:.0f}%" for m in ap)
                + "; token-forwards/item " + ", ".join(f"{k} {v['token_forwards_per_item']:.0f}"
                                                       for k, v in ll["calls"].items()),
                "exact at the block start", yes(max(ap[m]["block_start_max_rel_diff"] for m in ap) < 1e-4), cmd)
    sc = load(out, "scaling")
    if sc:
        cmd = command("scaling", out)
        for key, label in (("pilot_s", "pilot forward chunk"), ("train_s", "training step"),
                           ("generate_step_s", "generation step")):
            f = sc["fits"][key]
            add(f"scaling fit, {label} (L in 64..256, B in 1..16)", "—",
                f"{f['overhead_ms']:.2f} ms + {f['per_token_us']:.2f} us x B*L + {f['per_token_per_context_ns']:.3f} "
                f"ns x B*L^2 (max rel. error {100 * f['max_rel_error']:.0f}%)", "—", "n/a", cmd)
    return rows, notes


def write_readme(out: Path, walls: dict | None):
    mach_d = machine()
    mach = f"{mach_d['cpu']}, {mach_d['cores']} cores, 1 thread, torch {mach_d['torch']}"
    plots = []
    for name, fn, png in (("step_overhead", plot_step_overhead, "step_overhead.png"),
                          ("variance_per_compute", plot_variance, "variance_per_compute.png"),
                          ("pilot_cost", plot_pilot, "pilot_cost.png"),
                          ("generation_throughput", plot_generation, "generation.png"),
                          ("scaling", plot_scaling, "scaling.png")):
        data = load(out, name)
        if data:
            fn(data, out / png)
            plots.append(png)
    if (out / "decoding.png").exists():  # drawn by benchmarks/perf/decoding.py --plot
        plots.append("decoding.png")
    rows, _ = build_rows(out, mach)
    lines = ["# Performance", "",
             "Generated by `make perf` (`python benchmarks/perf/report.py --run`): every script in `benchmarks/perf/` "
             "runs, writes its JSON to `raw/`, and this page is rebuilt from them. Do not edit by hand.", "",
             f"Machine: {mach_d['cpu']} ({mach_d['cores']} cores; every measurement uses 1 torch thread: the box is "
             f"shared), torch {mach_d['torch']}, Python {mach_d['python']}. Timings are medians; on a shared machine "
             "they move by ~10%. Commands are `python benchmarks/perf/<command> --json results/perf/raw/<script>.json`.",
             ""]
    if walls:
        lines += [f"Wall time of this run: {sum(walls.values()) / 60:.1f} min ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + ").", ""]
    lines += ["| what was measured | baseline compared to | ratio / number | target | met? | machine | command |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    lines += [""]
    notes_path = Path(__file__).with_name("NOTES.md")
    if notes_path.exists():
        lines += [notes_path.read_text().strip(), ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out / 'README.md'} and {', '.join(plots)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run every perf script first")
    ap.add_argument("--out", type=Path, default=Path("results/perf"))
    args = ap.parse_args()
    os.chdir(ROOT)
    walls = run_all(args.out) if args.run else None
    if walls is None and (args.out / "raw" / "wall_seconds.json").exists():
        walls = json.loads((args.out / "raw" / "wall_seconds.json").read_text())
    write_readme(args.out, walls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
