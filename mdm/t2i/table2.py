"""The tiny Table 2 end to end: every (method, seed) cell, a summary, sample grids.

    python -m mdm.t2i.table2 run --out results/table2                 # 4 methods x 3 seeds, standalone
    python -m mdm.t2i.table2 run --out /tmp/t2 --seeds 42 --set training.steps=100
    python -m mdm.t2i.table2 summarize results/runs/table2 --out results/table2   # after `mdm bench`

`run` writes into --out:
    runs/text-to-image/<method>/seed<k>/   run_cell's folder + record.json (the bench runner's record format,
                                           so `mdm report <out>/runs` reads them)
and then what `summarize` writes (from any folder of t2i runs, e.g. the bench runner's results/runs/table2):
    text_to_image.md, text_to_image_summary.json
                                           per method and seed: CLIP score and attribute accuracy, mean,
                                           sample std, min, max, range; per-attribute accuracy; P-POTS+MIRROR's
                                           synergy; references (ground truth, codebook, chance); decoding knobs
    clip_retrieval.json                    the tiny CLIP on held-out pairs
    samples_grid.png                       the same held-out captions for ground truth and every method
Finished cells are skipped on a rerun. (`mdm report` owns README.md in the same folder.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mdm.provenance import code_version
from mdm.t2i.cell import T2IConfig, _read_json, _write_json, grid_indices, run_cell

METHODS = ("ppots+mirror", "standard", "ppots", "mirror")  # the paper's row order
SEEDS = (42, 731, 20231)
METRICS = ("clip_score", "attribute_accuracy")


def record_of(result: dict, run_dir: Path, version: dict | None = None) -> dict:
    """The bench runner's record (mdm.bench.runner.execute) for a finished cell."""
    return {"benchmark": "table2", "preset": "tiny", "task": "text-to-image", "method": result["method"],
            "model_family": "mdm", "seed": result["seed"], "status": result["status"], "reason": "",
            "metrics": result["metrics"], "steps": result["steps"], "tokens": result["tokens_seen"],
            "tokens_seen": result["tokens_seen"], "passes": result["passes"], "n_train": result["n_train"],
            "model_params": result["model_params"], "wall_time_s": result["wall_time_s"],
            "decoding": result["decoding"], "clip": result["clip"], "reference": result["reference"],
            "grid": result["grid"], "run_dir": str(run_dir), "code_version": version or {}}


def stats(values: list[float]) -> dict:
    return {"seeds": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "range": max(values) - min(values)}


def run_table(out: str | Path = "results/table2", methods=METHODS, seeds=SEEDS, config: T2IConfig | dict | None = None,
              echo=print) -> dict:
    from mdm.t2i.cell import prepare
    from mdm.t2i.clip import tiny_clip

    config = config if isinstance(config, T2IConfig) else T2IConfig.from_dict(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    echo("tiny CLIP (cached after the first build)...")
    scorer = tiny_clip(cache_dir=config.cache_dir, echo=echo) if config.eval.get("clip_model", "tiny") == "tiny" else None
    prepare(config, echo)  # codebook, tokenizer, base: built once before the cells
    version = code_version()
    for method in methods:
        for seed in seeds:
            run_dir = out / "runs" / "text-to-image" / method / f"seed{seed}"
            t0 = time.perf_counter()
            r = run_cell(method, seed, run_dir, config, echo=echo, scorer=scorer)
            _write_json(run_dir / "record.json", record_of(r, run_dir, version))
            m = r["metrics"]
            echo(f"[{method} seed {seed}] CLIP {m['clip_score']:.2f} (torchmetrics {m['clip_score_torchmetrics']:.2f}), "
                 f"attributes {m['attribute_accuracy']:.1f}%  ({time.perf_counter() - t0:.0f}s)")
    return summarize_runs(out / "runs", out, methods, seeds, config, scorer=scorer, echo=echo,
                          wall_time_s=time.perf_counter() - started)


def load_results(runs: str | Path) -> dict:
    """{(method, seed): result} of every finished t2i cell (result.json) under `runs`."""
    found = {}
    for path in sorted(Path(runs).rglob("result.json")):
        r = _read_json(path)
        if r and r.get("status") == "done" and r.get("task") == "text-to-image":
            found[(r["method"], r["seed"])] = {**r, "run_dir": str(path.parent)}
    return found


def summarize_runs(runs: str | Path, out: str | Path, methods=None, seeds=None, config: T2IConfig | None = None,
                   scorer=None, echo=print, wall_time_s: float | None = None) -> dict:
    """Summary, markdown table, CLIP retrieval and comparison grid of the t2i cells under `runs`."""
    from mdm.t2i.clip import retrieval_eval, tiny_clip

    results = load_results(runs)
    if not results:
        raise FileNotFoundError(f"no finished text-to-image runs (result.json) under {runs}")
    methods = [m for m in (methods or METHODS) if any(k[0] == m for k in results)] + \
        sorted({k[0] for k in results} - set(methods or METHODS))
    seeds = list(seeds or sorted({k[1] for k in results}))
    config = config or T2IConfig.from_dict(next(iter(results.values())).get("config"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retrieval = None
    if config.eval.get("clip_model", "tiny") == "tiny":
        scorer = scorer or tiny_clip(cache_dir=config.cache_dir, echo=echo)
        retrieval = retrieval_eval(scorer)
        _write_json(out / "clip_retrieval.json", retrieval)
    summary = summarize(results, methods, seeds, retrieval)
    if wall_time_s is not None:
        summary["wall_time_s"], summary["wall_time_of"] = round(wall_time_s, 1), "this run, builds of cached artifacts included"
    else:
        summary["wall_time_s"] = round(sum(r["wall_time_s"] for r in results.values()), 1)
        summary["wall_time_of"] = "the cells (sum), without the cached CLIP / codebook / base builds"
    summary["config"] = config.to_dict()
    _write_json(out / "text_to_image_summary.json", summary)
    grid = comparison_grid(results, methods, seeds[0], config, out / "samples_grid.png")
    (out / "text_to_image.md").write_text(render_readme(summary, grid))
    echo(f"wrote {out}/text_to_image.md, text_to_image_summary.json, samples_grid.png")
    return summary


def summarize(results: dict, methods, seeds, retrieval: dict | None) -> dict:
    rows = {}
    for method in methods:
        rs = [results[(method, s)] for s in seeds if (method, s) in results]
        if not rs:
            continue
        rows[method] = {k: stats([r["metrics"][k] for r in rs]) for k in METRICS}
        rows[method]["attributes"] = {a: statistics.fmean(r["metrics"][f"attribute_{a}"] for r in rs)
                                      for a in ("colour", "shape", "count", "position")}
        rows[method]["clip_score_torchmetrics"] = statistics.fmean(r["metrics"]["clip_score_torchmetrics"] for r in rs)
        rows[method]["wall_time_s"] = statistics.fmean(r["wall_time_s"] for r in rs)
        rows[method]["passes"] = statistics.fmean(r["passes"] for r in rs)
    synergy = {}
    if all(m in rows for m in ("standard", "ppots", "mirror", "ppots+mirror")):
        for k in METRICS:
            g = {m: rows[m][k]["mean"] - rows["standard"][k]["mean"] for m in ("ppots", "mirror", "ppots+mirror")}
            synergy[k] = {"gain_ppots+mirror": g["ppots+mirror"], "gain_ppots": g["ppots"], "gain_mirror": g["mirror"],
                          "synergy": g["ppots+mirror"] - g["ppots"] - g["mirror"]}
    any_result = next(iter(results.values()))
    return {"task": "text-to-image (tiny)", "metric": "CLIP score: " + any_result["clip"]["definition"],
            "clip_model": any_result["clip"]["model"], "decoding": any_result["decoding"],
            "methods": rows, "synergy": synergy, "reference": any_result["reference"],
            "clip_retrieval": retrieval, "n_eval": any_result["n_eval"], "seeds": list(seeds)}


def comparison_grid(results: dict, methods, seed: int, config: T2IConfig, path: Path, n: int = 12):
    """Rows: ground truth, then each method (seed `seed`), on `n` evaluation captions spread over the list."""
    import random

    import numpy as np

    from mdm.t2i.grid import save_grid
    from mdm.t2i.scenes import check_attributes, render

    rows, oks, labels = [], [], []
    captions = None
    for method in methods:
        run = results.get((method, seed))
        if run is None:
            continue
        samples = [json.loads(line) for line in (Path(run["run_dir"]) / "samples.jsonl").read_text().splitlines()]
        samples = [samples[i] for i in grid_indices(len(samples), n)]
        if captions is None:
            from mdm.t2i.scenes import Scene

            captions = [s["caption"] for s in samples]
            scenes = [Scene(**s["scene"]) for s in samples]
            rng = random.Random("t2i-grid")
            truth = np.stack([render(sc, rng) for sc in scenes])
            rows.append(truth)
            oks += [check_attributes(im, sc)["all"] for im, sc in zip(truth, scenes)]
            labels.append("ground truth")
            from mdm.t2i.image_tokenizer import tiny_image_tokenizer

            tokenizer = tiny_image_tokenizer(config.cache_dir) if config.image_tokenizer == "tiny" else None
        if tokenizer is None:
            return None
        rows.append(tokenizer.decode(np.array([s["codes"] for s in samples])))
        oks += [s["checks"]["all"] for s in samples]
        labels.append(f"{method} (seed {seed})")
    if not rows:
        return None
    return str(save_grid(np.concatenate(rows), path, captions * len(rows), oks, cols=len(captions),
                         row_labels=labels, title="held-out captions; green frame = colour, shape, count and "
                                                  "position all right"))


def render_readme(summary: dict, grid) -> str:
    ref = summary["reference"]
    lines = [
        "# Table 2 (tiny preset): text-to-image SFT, CLIP score",
        "",
        f"Metric: {summary['metric']} (CLIP model `{summary['clip_model']}`, trained by the project on the tiny "
        f"task). torchmetrics' CLIPScore (clamp after averaging) is reported alongside. Attribute accuracy: the "
        f"deterministic checker (colour, shape, count, position all right), in %. {summary['n_eval']} held-out "
        f"captions, one greedy image each; decoding: `{json.dumps(summary['decoding'])}`.",
        "",
        "| method | CLIP score (mean ± std) | seeds | attribute acc. % (mean ± std) | seeds | colour | shape | count | position |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, row in summary["methods"].items():
        c, a, at = row["clip_score"], row["attribute_accuracy"], row["attributes"]
        lines.append(f"| {method} | {c['mean']:.2f} ± {c['std']:.2f} | {', '.join(f'{v:.2f}' for v in c['seeds'])} "
                     f"| {a['mean']:.1f} ± {a['std']:.1f} | {', '.join(f'{v:.1f}' for v in a['seeds'])} | "
                     f"{at['colour']:.0f} | {at['shape']:.0f} | {at['count']:.0f} | {at['position']:.0f} |")
    gt, rec, ch = ref["ground_truth"], ref["tokenizer_reconstruction"], ref["chance"]
    lines += [
        f"| *ground truth* | {gt['clip_score']:.2f} | | {gt['attribute_accuracy']:.1f} | | | | | |",
        f"| *codebook reconstruction* | {rec['clip_score']:.2f} | | {rec['attribute_accuracy']:.1f} | | | | | |",
        f"| *chance (random scene)* | | | {ch['attribute_accuracy']:.1f} | | {ch['attribute_colour']:.0f} | "
        f"{ch['attribute_shape']:.0f} | {ch['attribute_count']:.0f} | {ch['attribute_position']:.1f} |",
        "",
    ]
    for k, s in summary.get("synergy", {}).items():
        lines.append(f"- {k}: gain(P-POTS+MIRROR) = {s['gain_ppots+mirror']:+.2f}, gain(P-POTS) = {s['gain_ppots']:+.2f}, "
                     f"gain(MIRROR) = {s['gain_mirror']:+.2f}, synergy = {s['synergy']:+.2f}")
    r = summary.get("clip_retrieval")
    if r:
        lines += ["", f"Tiny CLIP on {r['pairs']} held-out pairs ({r['captions']} test captions, new renders): "
                  f"matching caption above a mismatched one {100 * r['pairwise']:.1f}%, top-1 scene retrieval "
                  f"{100 * r['top1']:.1f}%, above every one-attribute change: colour {100 * r['hard_colour']:.0f}%, "
                  f"shape {100 * r['hard_shape']:.0f}%, count {100 * r['hard_count']:.0f}%, position "
                  f"{100 * r['hard_position']:.0f}%; CLIP score matched {r['clip_score_matched']:.1f} vs mismatched "
                  f"{r['clip_score_mismatched']:.1f}."]
    lines += ["", f"Wall time: {summary.get('wall_time_s', 0) / 60:.1f} min ({summary.get('wall_time_of', '')}).", ""]
    if grid:
        lines += [f"![samples]({Path(grid).name})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdm.t2i.table2", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate every cell, then summarize")
    r.add_argument("--out", default="results/table2")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. training.steps=200 (YAML values)")
    s = sub.add_parser("summarize", help="summary, retrieval and grid of finished runs (e.g. mdm bench's)")
    s.add_argument("runs", help="folder holding the runs (searched for result.json)")
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    echo = lambda line: print(line, flush=True)
    if args.cmd == "summarize":
        summarize_runs(args.runs, args.out, echo=echo)
        return 0
    from mdm.train.config import apply_overrides

    overrides = apply_overrides({}, args.set)
    run_table(args.out, [m for m in args.methods.split(",") if m], [int(s) for s in args.seeds.split(",") if s],
              T2IConfig.from_dict(overrides), echo=echo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
