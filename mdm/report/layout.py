"""The leaderboard a reader takes in at a glance, in the paper's layout, and the details page with everything else.

leaderboard.md: (1) methods as rows in the paper's order, per task our mean +- SD (n seeds) beside the paper's
mean +- SD (n) on the task ours stands for; (2) per task a gains table: paper gain | our gain [paired 95% CI] (common
seeds) | equal-compute gain | verdict (the claims page's, Holm-adjusted); `best` only by the pre-stated rule
(`mdm.report.tables.BEST_RULE`). details.md and leaderboard.csv hold the rest (min, max, range, compute, sources,
decoding, intervals of each row's mean, held-out loss).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdm.report.tables import BEST_RULE, paper_order, paper_task

TINY_CLIP_NOTE = ("Scale: our CLIP score is the project's tiny CLIP trained on the tiny scenes (generated images "
                  "score ~89, ground truth ~96); the paper's is a real CLIP on MMaDA-8B images (~31-35). The levels "
                  "are not comparable and neither are the gains' sizes: compare signs only.")


def scale_note(done: pd.DataFrame, paper) -> str:
    """What the paper's numbers beside ours are, per the runs' metrics ('' when no paper numbers are shown)."""
    if paper is None or done.empty:
        return ""
    notes = []
    clip = done.metric.astype(str).str.contains("tiny-clip") if "metric" in done else pd.Series(False, done.index)
    if clip.any():
        notes.append(TINY_CLIP_NOTE)
    stands = [f"{t} -> {paper_task(t)}" for t in sorted(done[~clip].task.unique()) if paper_task(t) != t]
    if stands:
        notes.append("The paper's column is its own number (LLaDA-8B-Instruct) on the task ours stands for ("
                     + ", ".join(stands) + "): the same format and scorer, another model and size; compare gains, "
                     "not levels.")
    return " ".join(notes)


def _mean_sd(values: np.ndarray) -> str:
    if not len(values):
        return "-"
    sd = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):.2f}{sd} ({len(values)})"


def methods_table(done: pd.DataFrame, board: pd.DataFrame, reference: pd.DataFrame | None) -> str:
    """Methods as rows in the paper's order; per task `ours` and `paper` mean +- SD (n seeds); ARMs at the end."""
    mdm = board[~board.is_arm] if not board.empty else board
    if mdm.empty:
        return "_no scored runs (`mdm eval RUN` scores a run)_"
    tasks = sorted(mdm.task.unique())
    methods = paper_order(set(mdm.method), tasks[0] if len(tasks) == 1 else "")
    best = {(r.method, r.task) for r in mdm.itertuples() if r.best}
    header = ["method"]
    for t in tasks:
        header += [f"{t}: ours", f"{paper_task(t)}: paper"] if reference is not None else [f"{t}: ours"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cells(family, method):
        out = []
        for t in tasks:
            ours = done[(done.model_family == family) & (done.method == method) & (done.task == t)].score
            mark = " **best**" if (method, t) in best and family == "mdm" else ""
            out.append(_mean_sd(ours.to_numpy(float)) + mark)
            if reference is not None:
                theirs = reference[(reference.model_family == family) & (reference.method == method)
                                   & (reference.task == paper_task(t))].score
                out.append(_mean_sd(theirs.to_numpy(float)))
        return out

    for m in methods:
        lines.append("| " + " | ".join([m, *cells("mdm", m)]) + " |")
    arm_families = sorted(set(board[board.is_arm].model_family))
    if reference is not None:
        arm_families += sorted(set(reference.model_family) - {"mdm"} - set(arm_families))
    for fam in arm_families:
        lines.append("| " + " | ".join([f"ARM {fam.removeprefix('arm:')}", *cells(fam, "standard")]) + " |")
    return "\n".join(lines)


def gains_table(board: pd.DataFrame, claims: pd.DataFrame | None) -> str:
    """Per task and method (paper order): paper gain | our gain [paired 95% CI] (common seeds) | equal-compute gain
    [CI] (its baseline) | verdict (the claims page's)."""
    if board.empty:
        return ""
    mdm = board[~board.is_arm & (board.method != "standard")]
    if mdm.empty or mdm.gain.isna().all():
        return ""
    verdicts = {}
    if claims is not None and not claims.empty:
        for r in claims.to_dict("records"):
            if r["claim"].endswith(" improves on Standard"):
                size = f"; {r['vs paper']}" if r.get("vs paper", "-") != "-" else ""
                verdicts[(r["claim"].removesuffix(" improves on Standard"), r["task"])] = r["verdict"] + size
    parts = []
    for task, g in mdm.groupby("task"):
        lines = [f"**{task}**" + (f" (paper: {paper_task(task)})" if paper_task(task) != task else ""), "",
                 "| method | paper gain | our gain [paired 95% CI] (common seeds) | equal-compute gain [CI] (vs) "
                 "| verdict |", "|---|---|---|---|---|"]
        for m in paper_order(set(g.method), task):
            r = g[g.method == m].iloc[0]
            paper = f"{r.paper_gain:+.2f}" if "paper_gain" in r and pd.notna(r.paper_gain) else "-"
            ours = "-" if pd.isna(r.gain) else \
                f"{r.gain:+.2f} {r.gain_ci95 or ''} ({int(r.n_common)})".replace("  ", " ")
            eq = "-" if pd.isna(r.eq_compute_gain) else \
                f"{r.eq_compute_gain:+.2f} {r.eq_compute_ci95 or ''} ({r.eq_compute_base})".replace("  ", " ")
            lines.append(f"| {m} | {paper} | {ours} | {eq} | {verdicts.get((m, task), '-')} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def leaderboard_page(benchmark: str, done: pd.DataFrame, board: pd.DataFrame, reference: pd.DataFrame | None,
                     claims: pd.DataFrame | None) -> str:
    note = scale_note(done, reference)
    text = [f"# {benchmark}: leaderboard", "",
            "Per task: our mean ± sample SD over seeds (number of seeds) beside the paper's"
            + (" (its per-seed table)" if reference is not None else "") + ". Every number traces to a run "
            "record ([details](details.md), [csv](leaderboard.csv): seeds, min, max, range, compute, sources, "
            "decoding).", ""]
    if note:
        text += [note, ""]
    text += [methods_table(done, board, reference), "", BEST_RULE, ""]
    gains = gains_table(board, claims)
    if gains:
        text += ["## Gains over Standard", "",
                 "Our gain is paired: on the seeds both rows ran (their number in brackets after the interval), "
                 "seed by seed and prompt by prompt (`mdm.report.stats.contrast`). Equal compute: the gain over the "
                 "baseline that spent the same passes (Standard for 1-pass methods, `multisample2` for 2-view ones). "
                 "Verdict: the [claims page](claims.md)'s (Holm-adjusted sign; the paper's size against our "
                 "interval).", "", gains, ""]
    return "\n".join(text)


def details_page(benchmark: str, board: pd.DataFrame, markdown, note: str = "") -> str:
    """Every column of the leaderboard (but the sources, in the CSV), MDM rows then ARMs."""
    if board.empty:
        return f"# {benchmark}: leaderboard details\n\n_no rows_\n"
    shown = board.drop(columns=["sources", "is_arm", "decoding"], errors="ignore")  # long: in the CSV
    parts = [f"# {benchmark}: leaderboard details", "",
             "Every column `mdm report` computes per row (sources and decoding: leaderboard.csv). `ci95`: the row "
             "mean's interval (bootstrap over seeds and prompts); `gain_ci95`: paired on the `n_common` seeds it "
             "shares with Standard; `p_seeds`: exact sign-flip p over those seeds, with the smallest p their number "
             "allows.", ""]
    if note:
        parts += [note, ""]
    for is_arm, title in ((False, "Masked diffusion methods"), (True, "ARM baselines (separate)")):
        rows = shown[board.is_arm == is_arm]
        if not rows.empty:
            parts += [f"## {title}", "", markdown(rows), ""]
    return "\n".join(parts)
