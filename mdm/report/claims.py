"""The paper's claims, one row each: the paper's number, ours with a seed-paired 95% interval, a multiplicity-adjusted
verdict and whether the paper's size lies in our interval.

Every comparison of runs is paired: it is computed on the seeds the compared rows share (`n_seeds` says how many),
seed by seed and prompt by prompt (`mdm.report.stats.contrast`). Verdicts: `reproduced` (the effect's sign is
established on the paper's side after Holm's adjustment over every seed-level test on the page), `contradicted` (on
the other side), `inconclusive` (not established after adjustment), `identical to Standard` (every common seed's
runs score the same on every prompt: a zero-width interval), `not estimable` (a spread at the ceiling), `not run`.
`vs paper` says whether the paper's own number lies inside our 95% interval. Run on the paper's own per-seed CSV,
the same page says what the paper's numbers themselves support.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mdm.report.stats import (
    arcsine,
    benjamini_hochberg,
    contrast,
    f_ratio,
    holm,
    min_p,
    paired_flip_p,
    pitman_morgan,
    seed_component,
)
from mdm.report.tables import aligned, done_scores, other_machines, outcome_table, paper_task

REDUCERS = ("ppots", "mirror", "isad", "syrm", "strats", "ema", "clipped")
COMBINATION = ("ppots", "mirror")
NAMES = ("standard", "+".join(COMBINATION), *COMBINATION)
EQUAL_COMPUTE = "multisample2"  # Standard with two independent masks per sequence: the passes of a 2-view method
# (the authors' launched configuration, the paper's definition of it): mdm.objective's released-code components
RELEASED = (("ppots_released+mirror_released_plus", "ppots+mirror"), ("mirror_released_plus", "mirror"))
ALPHA = 0.05
CEILING = 2.5  # points: an accuracy whose seeds' mean lies within this of 0 or 100 has no estimable seed spread
SYNERGY_WEIGHTS = {NAMES[1]: 1.0, "standard": 1.0, COMBINATION[0]: -1.0, COMBINATION[1]: -1.0}


def verdict(lo: float, hi: float, null: float = 0.0, claimed_above: bool = True, n: int | None = None) -> str:
    """The verdict of an interval read alone (no multiplicity): the variance-profile claims."""
    if n is not None and n < 2:
        return "inconclusive (1 seed: no interval)"
    if np.isnan(lo) or np.isnan(hi):
        return "not run"
    if lo > null:
        return "reproduced" if claimed_above else "contradicted"
    if hi < null:
        return "contradicted" if claimed_above else "reproduced"
    return "inconclusive at 95%"


def size_vs_paper(paper: float, lo: float, hi: float) -> str:
    """Whether the paper's number lies in our interval (the size of the effect, not only its sign)."""
    if np.isnan(paper) or np.isnan(lo) or np.isnan(hi):
        return "-"
    if lo <= paper <= hi:
        return "consistent with the paper's size"
    return "smaller than the paper's" if hi < paper else "larger than the paper's"


def _mean_gain(groups: dict, weights: dict) -> float:
    return float(100 * sum(w * np.mean(groups[m]) for m, w in weights.items()))


def claims(df: pd.DataFrame, paper: pd.DataFrame | None = None, profiles=()) -> pd.DataFrame:
    """df: run rows (load_scores); paper: the paper's per-seed rows (load_scores of its CSV), or None; profiles:
    `mdm variance` outputs (variance.json) whose variance ratios to Standard check the variance claims."""
    done = df[df.status == "done"].dropna(subset=["score"])
    ref = paper[paper.status == "done"] if paper is not None else None
    rows = []

    def add(claim, task, paper_value, ours, lo=np.nan, hi=np.nan, p=np.nan, *, above=True, n=None, detail="",
            methods=(), identical=False, label=None, null=0.0, fixed=None):
        """One row; its verdict is set once every p of the page is known (`_adjust`)."""
        mixed = _other_machines(done, task, methods)
        other_scale = _tiny_clip(done, task) and not np.isnan(paper_value)
        rows.append({"claim": claim, "task": task, "paper": paper_value, "ours": ours,
                     "ci95": None if np.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]", "n_seeds": n, "p": p,
                     "verdict": "not comparable (other machines)" if mixed else fixed,
                     "vs paper": "other scale (tiny CLIP vs the paper's CLIP)" if other_scale
                     else size_vs_paper(paper_value, lo, hi),
                     "detail": "; ".join(x for x in (detail, mixed) if x),
                     "_above": above, "_identical": identical, "_label": label, "_null": null, "_ours": ours})

    def compare(claim, task, weights, paper_value=np.nan, detail="", label=None):
        names = tuple(weights)
        got = aligned(done, task, names)
        if got is None:
            return False
        groups, seeds = got
        if len(seeds) < 2:
            add(claim, task, paper_value, _mean_gain(groups, weights) if seeds else np.nan, n=len(seeds),
                fixed="inconclusive (1 seed: no interval)" if seeds else "not run (no common seeds)", methods=names)
            return True
        c = contrast(groups, weights)
        identical = c.se == 0 and c.estimate == 0
        perm = _flip_text(groups, weights, len(seeds))
        add(claim, task, paper_value, c.estimate, c.lo, c.hi, c.p, n=len(seeds),
            methods=names, identical=identical, label=label,
            detail="; ".join(x for x in (detail, "identical on every common seed and prompt: zero-width interval"
                                         if identical else "", perm, _seed_note(done, task, names, seeds)) if x))
        return True

    for task in sorted(done.task.unique()):
        paper_name = paper_task(task)
        for r in REDUCERS + ("+".join(COMBINATION),):
            weights = {r: 1.0, "standard": -1.0}
            paper_gain = _printed_gain(ref, paper_name, r)
            if not compare(f"{r} improves on Standard", task, weights, paper_gain) and not np.isnan(paper_gain):
                add(f"{r} improves on Standard", task, paper_gain, np.nan, fixed="not run")
        for r in ("mirror", "+".join(COMBINATION)):  # the paper's comparisons are at equal steps; this one is not
            compare(f"{r} improves on {EQUAL_COMPUTE} (the same passes: equal compute)", task,
                    {r: 1.0, EQUAL_COMPUTE: -1.0},
                    detail="not run in the paper: separates lower variance from twice the compute")
        pt = aligned(ref, paper_name, NAMES) if ref is not None else None
        paper_syn = _mean_gain(pt[0], SYNERGY_WEIGHTS) if pt and pt[1] else np.nan
        got = aligned(done, task, NAMES)
        if got is not None and got[1]:
            means = {k: np.mean(v) for k, v in got[0].items()}
            combo = 100 * (means[NAMES[1]] - means["standard"])
            parts = sum(100 * (means[p] - means["standard"]) for p in COMBINATION)
            compare("P-POTS+MIRROR gains more than P-POTS and MIRROR summed (synergy)", task, SYNERGY_WEIGHTS,
                    paper_syn, detail=f"gain {combo:+.2f} vs {parts:+.2f} summed")
        if "attribute_outcomes" in done:  # text-to-image on the tiny scenes: attribute correctness per caption
            for r in ("+".join(COMBINATION), *COMBINATION):
                got = aligned(done, task, (r, "standard"), "attribute_outcomes")
                if got is None or len(got[1]) < 2:
                    continue
                c = contrast(got[0], {r: 1.0, "standard": -1.0})
                add(f"{r} improves on Standard (attribute accuracy, points)", task, np.nan, c.estimate, c.lo, c.hi, c.p,
                    n=len(got[1]), methods=(r, "standard"),
                    label=("better (established)", "worse (established)", "inconclusive at 95% (Holm)"),
                    detail="not in the paper: the tiny scenes' attribute checker (colour, shape, count, position all "
                           f"right); {_flip_text(got[0], {r: 1.0, 'standard': -1.0}, len(got[1]))}")
        _spread_claims(done, ref, task, paper_name, add)
        _worst_claim(done, ref, task, paper_name, add)
        for released, defined in RELEASED:  # what the released code's deviations change, on the same seeds
            compare(f"the released code's {released} (as launched) against the paper's {defined}", task,
                    {released: 1.0, defined: -1.0}, detail="not a claim of the paper: the cost of the deviations",
                    label=("released better", "released worse", "no difference at 95% (Holm)"))
    page = _adjust(pd.DataFrame(rows))
    return pd.concat([page, pd.DataFrame(profile_claims(profiles))], ignore_index=True) if profiles else page


def _printed_gain(ref: pd.DataFrame | None, task: str, method: str) -> float:
    """The paper's gain as its table prints it: the row's mean minus Standard's, each over the seeds it ran (its
    supplementary methods ran seed 42 only, Standard three seeds)."""
    if ref is None:
        return np.nan
    a, b = done_scores(ref, method, task), done_scores(ref, "standard", task)
    return float(a.mean() - b.mean()) if len(a) and len(b) else np.nan


def _adjust(page: pd.DataFrame) -> pd.DataFrame:
    """Holm (family-wise) and Benjamini-Hochberg (false discovery rate) adjusted p over every seed-level test on the
    page; each verdict from the Holm-adjusted p."""
    if page.empty:
        return page
    p = page.p.to_numpy(float)
    fam = ~page.verdict.map(lambda v: isinstance(v, str)).to_numpy() & ~page["_identical"].to_numpy(bool)
    page["p_holm"], page["p_bh"] = holm(np.where(fam, p, np.nan)), benjamini_hochberg(np.where(fam, p, np.nan))
    verdicts = []
    for r in page.to_dict("records"):
        label = r["_label"]
        if isinstance(r["verdict"], str):
            verdicts.append(r["verdict"])
        elif r["_identical"]:
            verdicts.append("identical to Standard (no effect)" if label is None else label[2])
        elif np.isnan(r["p_holm"]):
            verdicts.append("not run")
        elif r["p_holm"] < ALPHA:
            up = r["_ours"] > r["_null"]
            if label is not None:
                verdicts.append(label[0] if up else label[1])
            else:
                verdicts.append("reproduced" if up == r["_above"] else "contradicted")
        else:
            verdicts.append("inconclusive at 95% (Holm)" if label is None else label[2])
    page["verdict"] = verdicts
    cols = ["claim", "task", "paper", "ours", "ci95", "n_seeds", "p", "p_holm", "p_bh", "verdict", "vs paper",
            "detail"]
    return page[cols]


def _flip_text(groups: dict, weights: dict, k: int) -> str:
    """The exact paired randomisation test of the contrast's per-seed values against 0, with its resolution."""
    per_seed = sum(w * (np.asarray(groups[m]).mean(1) if np.ndim(groups[m]) == 2 else np.asarray(groups[m]))
                   for m, w in weights.items())
    p = paired_flip_p(per_seed, np.zeros_like(per_seed))
    return f"sign-flip p {p:.3g} (exact over 2^{k} swaps; the smallest possible is {min_p(k):.3g})"


def _seed_note(done: pd.DataFrame, task: str, methods, seeds) -> str:
    """'' when every compared row ran exactly the common seeds, else which rows ran more (left out)."""
    extra = {m: len(done_scores(done, m, task)) for m in methods}
    more = [f"{m} {n}" for m, n in extra.items() if n > len(seeds)]
    return f"on the {len(seeds)} common seeds (runs: {', '.join(more)})" if more else ""


def _ceiling(df: pd.DataFrame, task: str, who: str) -> bool:
    """A side whose accuracy's seed mean lies within CEILING points of 0 or 100 (its seed spread is floored)."""
    scores = _side_scores(df, task, who)
    m = np.mean(np.concatenate(scores)) if scores else np.nan
    return bool(_is_accuracy(df, task) and (m >= 100 - CEILING or m <= CEILING))


def _tiny_clip(df: pd.DataFrame, task: str) -> bool:
    """The task is scored with the project's tiny CLIP (scores ~89), not the paper's CLIP (~31-35)."""
    rows = df[df.task == task]
    return "metric" in rows and rows.metric.dropna().astype(str).str.contains("tiny-clip").any()


def _is_accuracy(df: pd.DataFrame, task: str) -> bool:
    rows = df[df.task == task]
    return "metric" in rows and rows.metric.dropna().astype(str).str.startswith("accuracy").any()


def _side_scores(df: pd.DataFrame, task: str, who: str) -> list[np.ndarray]:
    if who == "arm":
        return [g.score.to_numpy(float) for _, g in df[(df.model_family != "mdm") & (df.task == task)]
                .groupby("model_family")]
    rows = df[(df.model_family == "mdm") & (df.method == who) & (df.task == task)]
    return [rows.score.to_numpy(float)] if len(rows) else []


def _spread_claims(done, ref, task, paper_name, add) -> None:
    """'MDM Standard's seed spread exceeds the ARMs'' (independent samples: F on the arcsine scale, ARMs pooled) and
    'P-POTS+MIRROR narrows the seed spread' (the same seeds: Pitman-Morgan on the arcsine scale)."""
    combo = "+".join(COMBINATION)
    for claim, a, b in (("MDM Standard's seed spread exceeds the ARMs' (SD ratio; ARMs pooled)", "standard", "arm"),
                        ("P-POTS+MIRROR narrows the seed spread (SD ratio to Standard)", combo, "standard")):
        on_arcsine = _is_accuracy(done, task)  # the paper's numbers on the same scale as ours
        theirs = _sd_ratio(ref, paper_name, a, b, on_arcsine)[0] if ref is not None else np.nan
        ours = _sd_ratio(done, task, a, b, on_arcsine)
        if np.isnan(ours[0]) and np.isnan(theirs):
            continue
        scale = "arcsine-sqrt scale" if _is_accuracy(done, task) else "score scale"
        test = "F interval (independent runs, normal seeds)" if b == "arm" else \
            "Pitman-Morgan interval (paired on common seeds, normal seeds)"
        if any(_ceiling(done, task, w) for w in (a, b)):
            add(claim, task, theirs, np.nan, n=_n_seeds(done, task, a) or None, fixed="not estimable (ceiling)",
                detail=f"a side's accuracy is within {CEILING} points of 0 or 100: its seed spread is floored")
            continue
        n = ours[4]
        add(claim, task, theirs, ours[0], ours[1], ours[2], ours[3], above=b == "arm", null=1.0, n=n or None,
            methods=(a, "standard"), detail=f"{scale}; {test}; one-sided p" if not np.isnan(ours[0]) else "")


def _sd_ratio(df, task: str, a: str, b: str, on_arcsine: bool = True) -> tuple[float, float, float, float, int]:
    """(SD ratio a / b, 95% interval, one-sided p of the claim, seeds of a): independent F against the ARMs, paired
    Pitman-Morgan on common seeds between MDM rows; on the arcsine scale for accuracies; nan where not estimable."""
    none = (np.nan, np.nan, np.nan, np.nan, 0)
    if df is None:
        return none
    if b == "arm":
        sa, sb = _side_scores(df, task, a), _side_scores(df, task, b)
        va, da = _pooled([arcsine(x) if on_arcsine else x for x in sa])
        vb, db = _pooled([arcsine(x) if on_arcsine else x for x in sb])
        if not da or not db or vb == 0:
            return none
        return (*(float(v) for v in f_ratio(va, da, vb, db)), da + 1)
    got = aligned(df, task, (a, b))
    if got is None or len(got[1]) < 3:
        return none
    x, y = (100 * (np.asarray(v).mean(1) if np.ndim(v) == 2 else np.asarray(v)) for v in (got[0][a], got[0][b]))
    x, y = (arcsine(x), arcsine(y)) if on_arcsine else (x, y)
    return (*(float(v) for v in pitman_morgan(x, y)), len(got[1]))


def _pooled(samples: list[np.ndarray]) -> tuple[float, int]:
    samples = [x for x in samples if len(x) > 1]
    dof = sum(len(x) - 1 for x in samples)
    return (sum(((x - x.mean()) ** 2).sum() for x in samples) / dof, dof) if dof else (np.nan, 0)


def _worst_claim(done, ref, task, paper_name, add) -> None:
    """'P-POTS+MIRROR's worst run beats Standard's worst run' as a test: the exact paired randomisation test of
    min(combination) - min(Standard) on common seeds (swapping each seed's two runs), one-sided; its error rate is
    at most its level by construction, and with k seeds its p is at least 1 / 2^k."""
    combo = "+".join(COMBINATION)
    theirs = np.nan
    if ref is not None and (pt := aligned(ref, paper_name, (combo, "standard"))) and pt[1]:
        theirs = float(100 * (np.min(pt[0][combo]) - np.min(pt[0]["standard"])))
    got = aligned(done, task, (combo, "standard"))
    if (got is None or not got[1]) and np.isnan(theirs):
        return
    if got is None or not got[1]:
        add("P-POTS+MIRROR's worst run beats Standard's worst run (points)", task, theirs, np.nan, fixed="not run")
        return
    a, b = (100 * (np.asarray(v).mean(1) if np.ndim(v) == 2 else np.asarray(v)) for v in (got[0][combo],
                                                                                          got[0]["standard"]))
    k = len(a)
    p = paired_flip_p(a, b, lambda x, y: x.min(-1) - y.min(-1), "greater") if k > 1 else np.nan
    add("P-POTS+MIRROR's worst run beats Standard's worst run (points)", task, theirs, float(a.min() - b.min()),
        p=p, n=k, methods=(combo, "standard"),
        fixed="inconclusive (1 seed: no test)" if k < 2 else None,
        detail=f"a test, no interval: exact paired randomisation over the 2^{k} swaps of each common seed's runs "
               "(false-positive rate at most its level), "
               f"one-sided; its smallest possible p is {min_p(k, 'greater'):.3g}" if k > 1 else "")


# the variance claims (METHODS.md 3-4): (method, term of vs_standard, the bound it is claimed below, the claim)
PROFILE_CLAIMS = (
    ("mirror", "A_low_t", 0.5, "MIRROR at least halves the pattern noise A at t < 1/2 (ratio to Standard <= 0.5)"),
    ("mirror", "A", 1.0, "MIRROR lowers the pattern noise A (ratio to Standard < 1)"),
    ("ppots", "total", 1.0, "P-POTS lowers the total loss variance A+B+C (ratio to Standard < 1)"),
    ("ppots+mirror", "total", 1.0, "P-POTS+MIRROR lowers the total loss variance (ratio to Standard < 1)"),
)


def profile_claims(paths) -> list[dict]:
    """Claim rows from variance profiles: the ratio to Standard with a normal 95% interval from its paired
    bootstrap SE (same resampled sequences); reproduced when the interval lies below the bound."""
    rows = []
    for path in paths:
        result = json.loads(path.read_text())
        for method, term, bound, claim in PROFILE_CLAIMS:
            vs = ((result.get("methods") or {}).get(method) or {}).get("vs_standard") or {}
            ratio, se = vs.get(f"{term}_ratio"), vs.get(f"{term}_ratio_se")
            if ratio is None or se is None or not np.isfinite(se):
                continue
            lo, hi = ratio - 1.96 * se, ratio + 1.96 * se
            rows.append({"claim": claim, "task": f"profile: {result.get('data', path.parent.name)}", "paper": np.nan,
                         "ours": float(ratio), "ci95": f"[{lo:.3f}, {hi:.3f}]", "n_seeds": None,
                         "verdict": verdict(bound - hi, bound - lo),
                         "detail": f"mdm variance (a={result.get('a')}, b={result.get('b')}, c={result.get('c')}; "
                                   f"{result.get('model')}); {path.parent.name}/{path.name}"})
    return rows


def _other_machines(done: pd.DataFrame, task: str, methods) -> str:
    """'' when the rows' runs share one set of kernels, else what differs (`other_machines`)."""
    sets = other_machines(done, task, methods)
    if not sets:
        return ""
    return "runs on other machines: " + ", ".join(f"{m} on {'/'.join(sorted(k))}" for m, k in sets.items() if k)


def _n_seeds(df, task, who) -> int:
    return int(((df.model_family == "mdm") & (df.method == who) & (df.task == task)).sum())


def spread_table(df: pd.DataFrame) -> pd.DataFrame:
    """Run-to-run spread per task and row: the seed SD with its 95% interval (chi-square, normal seeds), the
    seed component alone (per-prompt sampling noise taken out: two-way ANOVA, where outcomes are kept), the
    worst run, and the SD's ratio to the ARMs' pooled seed SD on the arcsine scale (accuracies) with its F interval,
    not estimable where a side sits at the ceiling."""
    from scipy.stats import chi2  # deferred: scipy.stats.chi2, only for this interval

    done = df[df.status == "done"].dropna(subset=["score"])
    rows = []
    for (task, family, method), g in done.groupby(["task", "model_family", "method"], sort=True):
        g = g.sort_values("seed")
        k, sd = len(g), g.score.std(ddof=1) if len(g) > 1 else np.nan
        table, _ = outcome_table(g)
        lo = hi = np.nan
        if k > 1:
            lo, hi = (np.sqrt((k - 1) * sd**2 / chi2.ppf(q, k - 1)) for q in (0.975, 0.025))
        worst = g.loc[g.score.idxmin()]
        row = {"task": task, "model_family": family, "method": method, "n_seeds": k, "mean": g.score.mean(),
               "sd": sd, "sd_ci95": None if np.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]",
               "seed_sd": 100 * np.sqrt(seed_component(table)) if table.ndim == 2 else np.nan,
               "worst": worst.score, "worst_seed": int(worst.seed), "best": g.score.max()}
        arm_var, _ = _pooled(_side_scores(done, task, "arm"))
        row["arm_sd"] = np.sqrt(arm_var) if not np.isnan(arm_var) else np.nan
        if family == "mdm":
            ceiling = _ceiling(done, task, method) or _ceiling(done, task, "arm")
            ratio = (np.nan,) * 3 if ceiling else _sd_ratio(done, task, method, "arm", _is_accuracy(done, task))
            row["sd_over_arm"] = ratio[0]
            row["sd_over_arm_ci95"] = "not estimable (ceiling)" if ceiling else \
                None if np.isnan(ratio[1]) else f"[{ratio[1]:.2f}, {ratio[2]:.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)
