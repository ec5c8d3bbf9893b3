"""Write a benchmark's report folder: leaderboard, synergy, plots and a README that links them."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pandas as pd

from mdm.report import plots
from mdm.report.claims import ALPHA, CEILING, claims, spread_table
from mdm.report.layout import details_page, leaderboard_page, scale_note
from mdm.report.status import status_block
from mdm.report.tables import leaderboard, paper_reference, paper_rows, synergy


def _markdown(df: pd.DataFrame, floatfmt=".4g") -> str:
    if df.empty:
        return "_no rows_"
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=floatfmt, missingval="-")


def loss_curves_of(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in df[df.source.str.endswith("record.json")].iterrows():
        log = Path(r.source).with_name("train_log.jsonl")
        if not log.is_file():
            continue
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "loss" in entry and "step" in entry:
                # the loss before any control variate: EMA shifts the value (not the gradient), which
                # would make its curve incomparable with the others
                label = r.method if r.model_family == "mdm" else f"ARM {r.model_family.removeprefix('arm:')}"
                rows.append({"task": r.task, "method": label, "seed": r.seed, "step": entry["step"],
                             "loss": entry.get("loss_raw", entry["loss"])})
    return pd.DataFrame(rows)


def context_of(df: pd.DataFrame) -> dict:
    """Preset, hardware and decoding settings as the records state them (one line each per distinct value)."""
    def distinct(col):
        return sorted({str(v) for v in df[col].dropna()}) if col in df else []

    context = {"preset": ", ".join(distinct("preset")) or "-",
               "hardware": "; ".join(distinct("hardware")) or platform.platform()}
    decoding = {task: sorted({str(v) for v in g.decoding.dropna()}) for task, g in df.groupby("task")} \
        if "decoding" in df else {}
    context["decoding"] = "; ".join(f"{task}: `{' | '.join(v)}`" for task, v in decoding.items() if v) or "-"
    keys = distinct("decoding_key")
    if keys:  # read_records keeps one decoding: every score on the page was decoded alike
        context["decoding"] = f"{' | '.join(keys)} (mdm.decoding key; exact = the paper's own decoding, no faster strategy or cache): " + \
            context["decoding"]
    return context


def write_report(df: pd.DataFrame, out: Path, benchmark: str, context: dict | None = None,
                 metric_label: str = "score", costs: dict | None = None, extras: list[Path] = (),
                 links: list[str] = ()) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    paper = paper_reference(benchmark)
    reference = paper_rows(benchmark.removeprefix("paper_"))
    board = leaderboard(df, paper)
    syn = synergy(df, costs)
    page = claims(df, reference, profiles=[e for e in extras if e.name == "variance.json"])
    done = df[(df.status == "done")].dropna(subset=["score"])
    board.to_csv(out / "leaderboard.csv", index=False)
    syn.to_csv(out / "synergy.csv", index=False)
    beside = None if benchmark.startswith("paper_") else reference  # the paper's own numbers: no second copy
    (out / "leaderboard.md").write_text(leaderboard_page(benchmark, done, board, beside, page))
    note = scale_note(done, reference)
    (out / "details.md").write_text(details_page(benchmark, board, _markdown, note))
    (out / "synergy.md").write_text(
        f"# {benchmark}: synergy vs additivity\n\nsynergy = gain(combination) - sum of the parts' gains over "
        "Standard, on the seeds every row shares (`n_seeds`); paired 95% interval and p from the per-seed, "
        "per-prompt contrast (two-way random effects, `mdm.report.stats.contrast`); unadjusted here (the claims "
        "page adjusts).\n\n" + _markdown(syn) + "\n")
    source = "the paper's own per-seed numbers" if benchmark.startswith("paper_") else f"the {benchmark} records"
    n_tests = int(page.p_holm.notna().sum()) if "p_holm" in page else 0
    (out / "claims.md").write_text(
        f"# {benchmark}: the paper's claims, checked on {source}\n\n"
        "One row per claim: the paper's number (from its per-seed table; a gain as its table prints it, the row's "
        "mean minus Standard's over the seeds each ran), ours, and a verdict. Comparisons of runs "
        "are paired on the seeds the compared rows share (`n_seeds`), seed by seed and prompt by prompt: 95% "
        "interval and two-sided `p` from a two-way random-effects model (seed + prompt) with Satterthwaite df "
        "(`mdm.report.stats.contrast`; a paired t on per-seed scores where no per-prompt outcomes are kept); "
        "`detail` adds the exact sign-flip randomisation p over the seeds and the smallest p their number allows. "
        f"Multiplicity: `p_holm` (Holm, family-wise) and `p_bh` (Benjamini-Hochberg) over the {n_tests} seed-level "
        f"tests on this page; the verdict is taken from `p_holm` at {ALPHA} (sign established on the paper's side: "
        "reproduced; on the other: contradicted). `vs paper`: whether the paper's own number lies inside our "
        "95% interval (consistent with / smaller than / larger than the paper's size). Seed spreads: SD ratios on "
        "the arcsine-sqrt scale for accuracies (binomial noise equal at any accuracy), an F interval for the MDM vs "
        "ARM runs (independent), a Pitman-Morgan interval for two MDM rows on common seeds (paired); not estimable "
        f"when a side's mean accuracy is within {CEILING} points of 0 or 100. The worst-run claim is an exact paired "
        "randomisation test (no interval). Variance-profile rows: a normal interval from the profile's paired "
        "bootstrap SE, read alone.\n\n" + (f"{note}\n\n" if note else "") + _markdown(page) + "\n")
    spread = spread_table(df)
    spread.to_csv(out / "spread.csv", index=False)
    (out / "spread.md").write_text(
        f"# {benchmark}: run-to-run spread\n\nPer row: the seed SD of the score with its 95% interval (chi-square, "
        "normal seeds), `seed_sd` = the seed component alone (per-prompt sampling noise removed, two-way ANOVA), "
        "the worst run, and the SD over the ARMs' pooled seed SD on the arcsine-sqrt scale for accuracies with its "
        f"F interval (not estimable when a side's mean accuracy is within {CEILING} points of 0 or 100).\n\n"
        + _markdown(spread) + "\n")
    (out / "status.md").write_text(status_block(benchmark, done, page, note))
    figures = plots.seed_scores(done, out, metric_label) if not done.empty else []
    curves = loss_curves_of(df) if "source" in df else pd.DataFrame()
    if not curves.empty:
        figures += plots.loss_curves(curves, out)
    for extra in extras:
        if extra.name == "variance.json":
            figures.append(plots.variance_bars(extra, out))
    densities = [extra for extra in extras if extra.name == "ppots.json"]
    if densities:
        figures.append(plots.ppots_densities(densities, out))
    failed = df[df.status != "done"]
    unscored = df[(df.status == "done") & df.score.isna()]
    context = {**context_of(df), **(context or {})}
    lines = [f"# {benchmark} report", "", *(f"- **{k}**: {v}" for k, v in context.items()), "",
             "- [leaderboard](leaderboard.md) ([details](details.md), [csv](leaderboard.csv))",
             "- [synergy vs additivity](synergy.md) ([csv](synergy.csv))",
             "- [the paper's claims: ours, with intervals and verdicts](claims.md)",
             "- [run-to-run spread: seed SD, worst run, ratio to the ARMs](spread.md) ([csv](spread.csv))", *links, "",
             "Every number traces to a run record (`sources` column of leaderboard.csv).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    if not unscored.empty:
        cols = [c for c in ("task", "method", "seed", "heldout_loss", "source") if c in unscored]
        lines += ["", "## Runs without a score (not on the leaderboard)", "", _markdown(unscored[cols])]
    if not failed.empty:
        lines += ["", "## Failed runs", "", _markdown(failed[["task", "method", "seed", "reason", "source"]])]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out
