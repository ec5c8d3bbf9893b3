"""The text-to-image report: per-attribute table, the tiny CLIP's check and sample grids, from finished runs.

    mdm bench benchmarks/table2.yaml && mdm report results/runs/table2 --out results/table2   # calls this

From the records of the text-to-image runs under a folder (`mdm bench`'s layout) it writes into --out:
    text_to_image.md, text_to_image_summary.json
                                           per method and seed: CLIP score and attribute accuracy, mean,
                                           sample std, min, max, range; per-attribute accuracy; references
                                           (ground truth, codebook, chance); decoding knobs (gains and
                                           synergy with their paired intervals: `mdm report`'s synergy.md)
    clip_retrieval.json                    the tiny CLIP on held-out pairs
    samples_grid.png                       the same held-out captions for ground truth and every method
It reads artifacts and never trains (`mdm report` owns README.md in the same folder).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

from mdm.t2i.task import TASK, grid_indices, image_tokenizer_of, t2i_cache, task_options

METHODS = ("ppots+mirror", "standard", "ppots", "mirror")  # the paper's row order
METRICS = ("clip_score", "attribute_accuracy")


def stats(values: list[float]) -> dict:
    return {"seeds": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "range": max(values) - min(values)}


def load_results(runs: str | Path) -> dict:
    """{(method, seed): record} of every evaluated text-to-image run (record.json) under `runs`, its
    `eval.text-to-image` entries lifted to the top (n_eval, decoding, clip, reference, grid)."""
    found = {}
    for path in sorted(Path(runs).rglob("record.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        ev = (r.get("eval") or {}).get(TASK)
        if r.get("task") == TASK and r.get("status") == "done" and ev:
            found[(r["method"], r["seed"])] = {**r, **ev, "run_dir": str(path.parent)}
    return found


def summarize_runs(runs: str | Path, out: str | Path, methods=None, seeds=None, scorer=None, echo=print) -> dict:
    """Summary, markdown table, CLIP retrieval and comparison grid of the text-to-image runs under `runs`."""
    from mdm.t2i.clip import retrieval_eval, tiny_clip  # deferred: mdm.t2i.clip imports torch and open_clip

    results = load_results(runs)
    if not results:
        raise FileNotFoundError(f"no evaluated text-to-image runs (record.json) under {runs}")
    if not all("attribute_accuracy" in r["metrics"] for r in results.values()):  # not the scenes: no attributes
        return {}
    methods = [m for m in (methods or METHODS) if any(k[0] == m for k in results)] + \
        sorted({k[0] for k in results} - set(methods or METHODS))
    seeds = list(seeds or sorted({k[1] for k in results}))
    first = next(iter(results.values()))
    cache = t2i_cache(first["config"]["model"].get("cache_dir"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retrieval = None
    if first["settings"]["clip_model"] == "tiny":
        scorer = scorer or tiny_clip(cache_dir=cache, echo=echo)
        retrieval = retrieval_eval(scorer)
        (out / "clip_retrieval.json").write_text(json.dumps(retrieval, indent=2) + "\n")
    summary = summarize(results, methods, seeds, retrieval)
    summary["wall_time_s"] = round(sum(r["wall_time_s"] for r in results.values()), 1)
    summary["wall_time_of"] = "the runs (sum of training + evaluation), without the cached codebook / base / CLIP builds"
    (out / "text_to_image_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tokenizer = image_tokenizer_of(task_options(first["config"]["data"].get("options")), cache)
    grid = comparison_grid(results, methods, seeds[0], tokenizer, out / "samples_grid.png")
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
        rows[method]["wall_time_s"] = statistics.fmean(r["wall_time_s"] for r in rs)
        rows[method]["passes"] = statistics.fmean(r["passes"] for r in rs)
    any_result = next(iter(results.values()))
    return {"task": "text-to-image (tiny)", "metric": "CLIP score: " + any_result["clip"]["definition"],
            "clip_model": any_result["clip"]["model"], "decoding": any_result["decoding"],
            "methods": rows, "reference": any_result["reference"],
            "clip_retrieval": retrieval, "n_eval": any_result["n_eval"], "seeds": list(seeds)}


def comparison_grid(results: dict, methods, seed: int, tokenizer, path: Path, n: int = 12):
    """Rows: ground truth, then each method (seed `seed`), on `n` evaluation captions spread over the list;
    `tokenizer`: the runs' image tokenizer (the ground truth is drawn at its image size)."""
    # deferred: numpy and the image helpers, only for the comparison grid
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
            # deferred: numpy and the image helpers, only for the comparison grid
            from mdm.t2i.scenes import Scene

            captions = [s["caption"] for s in samples]
            scenes = [Scene(**s["scene"]) for s in samples]
            rng = random.Random("t2i-grid")
            truth = np.stack([render(sc, rng) for sc in scenes])
            oks += [check_attributes(im, sc)["all"] for im, sc in zip(truth, scenes)]
            if truth.shape[1] != tokenizer.image_size:
                from PIL import Image  # deferred: PIL, only for the comparison grid

                size = (tokenizer.image_size, tokenizer.image_size)
                truth = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.NEAREST)) for im in truth])
            rows.append(truth)
            labels.append("ground truth")
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
        f"task). Attribute accuracy: the "
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
    rows = summary["methods"]
    if all(m in rows for m in ("standard", "ppots", "mirror", "ppots+mirror")):
        g = {m: rows[m]["attribute_accuracy"]["mean"] - rows["standard"]["attribute_accuracy"]["mean"] for m in rows}
        lines.append(f"Attribute accuracy over Standard: P-POTS+MIRROR {g['ppots+mirror']:+.2f}, P-POTS {g['ppots']:+.2f}, "
                     f"MIRROR {g['mirror']:+.2f}: synergy {g['ppots+mirror'] - g['ppots'] - g['mirror']:+.2f} (seed means). "
                     "Gains paired on captions and seeds with 95% intervals and Holm-adjusted verdicts (CLIP score and "
                     "attribute accuracy): [claims.md](claims.md); synergy: [synergy.md](synergy.md).")
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

