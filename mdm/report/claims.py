"""The paper's claims, one row each, with its number, ours with a paired 95% interval, and a verdict.

Verdicts: `reproduced` (the interval is on the paper's side of 0, or of 1 for ratios), `contradicted` (on the
other side), `inconclusive at 95%` (it contains the null), `not run` (a row the records lack). Run on the paper's
own per-seed CSV, the same page says what the paper's numbers themselves support.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mdm.report.stats import bootstrap_interval, seed_component
from mdm.report.tables import done_scores, other_machines, outcome_table, paired, paper_task

REDUCERS = ("ppots", "mirror", "isad", "syrm", "strats", "ema")
COMBINATION = ("ppots", "mirror")
NAMES = ("standard", "+".join(COMBINATION), *COMBINATION)
EQUAL_COMPUTE = "multisample2"  # Standard with two independent masks per sequence: the passes of a 2-view method
# (the authors' launched configuration, the paper's definition of it): mdm.objective's released-code components
RELEASED = (("ppots_released+mirror_released_plus", "ppots+mirror"), ("mirror_released_plus", "mirror"))


def _synergy(m: dict):
    """gain(P-POTS+MIRROR) - (gain(P-POTS) + gain(MIRROR)) over Standard, in points."""
    return 100 * ((m[NAMES[1]] - m["standard"]) - sum(m[p] - m["standard"] for p in COMBINATION))


def verdict(lo: float, hi: float, null: float = 0.0, claimed_above: bool = True, n: int | None = None) -> str:
    if n is not None and n < 2:
        return "inconclusive (1 seed: no interval)"
    if np.isnan(lo) or np.isnan(hi):
        return "not run"
    if lo > null:
        return "reproduced" if claimed_above else "contradicted"
    if hi < null:
        return "contradicted" if claimed_above else "reproduced"
    return "inconclusive at 95%"


def _tables(done: pd.DataFrame, task: str, methods) -> dict | None:
    groups = {}
    for m in methods:
        g = done[(done.model_family == "mdm") & (done.method == m) & (done.task == task)].sort_values("seed")
        if g.empty:
            return None
        groups[m] = outcome_table(g)
    return paired(groups)


def _gain(t: dict, m: str) -> float:
    return float(100 * (np.mean(t[m]) - np.mean(t["standard"])))


def claims(df: pd.DataFrame, paper: pd.DataFrame | None = None, profiles=()) -> pd.DataFrame:
    """df: run rows (load_scores); paper: the paper's per-seed rows (load_scores of its CSV), or None; profiles:
    `mdm variance` outputs (variance.json) whose variance ratios to Standard check the variance claims."""
    done = df[df.status == "done"].dropna(subset=["score"])
    ref = paper[paper.status == "done"] if paper is not None else None
    rows = []

    def add(claim, task, paper_value, ours, lo, hi, null=0.0, above=True, n=None, detail="", methods=(), label=None):
        """One row; `label`: the verdict when the interval is read otherwise than as a claim (else `verdict`)."""
        mixed = _other_machines(done, task, methods)
        rows.append({"claim": claim, "task": task, "paper": paper_value, "ours": ours,
                     "ci95": None if np.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]", "n_seeds": n,
                     "verdict": "not comparable (other machines)" if mixed else label or verdict(lo, hi, null, above, n),
                     "detail": "; ".join(x for x in (detail, mixed) if x)})

    for task in sorted(done.task.unique()):
        paper_name = paper_task(task)
        for r in REDUCERS + ("+".join(COMBINATION),):
            t = _tables(done, task, ("standard", r))
            pt = _tables(ref, paper_name, ("standard", r)) if ref is not None else None
            if t is None and pt is None:
                continue
            paper_gain = _gain(pt, r) if pt else np.nan
            if t is None or min(len(t[r]), len(t["standard"])) < 2:
                add(f"{r} improves on Standard", task, paper_gain, _gain(t, r) if t else np.nan, np.nan, np.nan,
                    n=len(t[r]) if t else None)
                continue
            lo, hi = bootstrap_interval(t, lambda m, r=r: 100 * (m[r] - m["standard"]))
            same = np.array_equal(t[r], t["standard"])
            add(f"{r} improves on Standard", task, paper_gain, _gain(t, r), lo, hi, n=len(t[r]),
                detail="identical to Standard on every seed and prompt" if same else "", methods=("standard", r))
        for r in ("mirror", "+".join(COMBINATION)):  # the paper's comparisons are at equal steps; this one is not
            t = _tables(done, task, (EQUAL_COMPUTE, r))
            if t is None or min(len(t[r]), len(t[EQUAL_COMPUTE])) < 2:
                continue
            lo, hi = bootstrap_interval(t, lambda m, r=r: 100 * (m[r] - m[EQUAL_COMPUTE]))
            add(f"{r} improves on {EQUAL_COMPUTE} (the same passes: equal compute)", task, np.nan,
                float(100 * (np.mean(t[r]) - np.mean(t[EQUAL_COMPUTE]))), lo, hi, n=min(len(t[r]), len(t[EQUAL_COMPUTE])),
                detail="not run in the paper: separates lower variance from twice the compute", methods=(EQUAL_COMPUTE, r))
        t = _tables(done, task, NAMES)
        pt = _tables(ref, paper_name, NAMES) if ref is not None else None
        paper_syn = _synergy({k: np.mean(v) for k, v in pt.items()}) if pt else np.nan
        if t is not None:
            lo, hi = bootstrap_interval(t, _synergy)
            means = {k: np.mean(v) for k, v in t.items()}
            combo, parts = _gain(means, NAMES[1]), sum(_gain(means, p) for p in COMBINATION)
            add("P-POTS+MIRROR gains more than P-POTS and MIRROR summed (synergy)", task, paper_syn,
                _synergy(means), lo, hi, n=min(len(v) for v in t.values()),
                detail=f"gain {combo:+.2f} vs {parts:+.2f} summed", methods=NAMES)
        for claim, a, b, above in (("MDM Standard's seed spread exceeds the ARMs' (SD ratio; ARMs pooled)",
                                    "standard", "arm", True),
                                   ("P-POTS+MIRROR narrows the seed spread (SD ratio to Standard)",
                                    "+".join(COMBINATION), "standard", False)):
            ours = _sd_ratio(done, task, a, b)
            theirs = _sd_ratio(ref, paper_name, a, b) if ref is not None else (np.nan, np.nan, np.nan)
            if not np.isnan(ours[0]) or not np.isnan(theirs[0]):
                zero = np.isnan(ours[0]) and _spread(done, task, b)[0] == 0
                add(claim, task, theirs[0], ours[0], ours[1], ours[2], null=1.0, above=above,
                    n=_n_seeds(done, task, a) if not np.isnan(ours[0]) else None,
                    detail="the denominator's seeds all score the same (SD 0)" if zero else "")
        combo = "+".join(COMBINATION)
        ours, theirs = _worst_gap(done, task, combo), _worst_gap(ref, paper_name, combo)
        if not np.isnan(ours[0]) or not np.isnan(theirs[0]):
            add("P-POTS+MIRROR's worst run beats Standard's worst run (points)", task, theirs[0], ours[0], ours[1],
                ours[2], n=_n_seeds(done, task, combo) or None,
                detail="bootstrap over seeds of a minimum: approximate" if not np.isnan(ours[1]) else "")
        for released, defined in RELEASED:  # what the released code's deviations change, on the same draws' budget
            t = _tables(done, task, (released, defined))
            if t is None or min(len(t[released]), len(t[defined])) < 2:
                continue
            lo, hi = bootstrap_interval(t, lambda m, a=released, b=defined: 100 * (m[a] - m[b]))
            add(f"the released code's {released} (as launched) against the paper's {defined}", task, np.nan,
                float(100 * (np.mean(t[released]) - np.mean(t[defined]))), lo, hi,
                n=min(len(t[released]), len(t[defined])), methods=(released, defined),
                detail="not a claim of the paper: the cost of the deviations",
                label="released better" if lo > 0 else "released worse" if hi < 0 else "no difference at 95%")
    rows += profile_claims(profiles)
    return pd.DataFrame(rows)


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


def _worst_gap(df: pd.DataFrame | None, task: str, method: str, n: int = 4000) -> tuple[float, float, float]:
    """min over seeds of `method` minus that of Standard, with a percentile interval from resampling each row's
    seeds (nan without 2 seeds on both sides)."""
    if df is None:
        return np.nan, np.nan, np.nan
    a, b = (done_scores(df, m, task) for m in (method, "standard"))
    if len(a) < 2 or len(b) < 2:
        return (float(a.min() - b.min()) if len(a) and len(b) else np.nan), np.nan, np.nan
    rng = np.random.default_rng(0)
    draws = a[rng.integers(0, len(a), (n, len(a)))].min(1) - b[rng.integers(0, len(b), (n, len(b)))].min(1)
    return float(a.min() - b.min()), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _spread(df: pd.DataFrame, task: str, who: str) -> tuple[float, int]:
    """(variance, degrees of freedom) over seeds; for "arm", pooled over every ARM model's own seeds."""
    if who == "arm":
        models = [g.score.to_numpy(float) for _, g in df[(df.model_family != "mdm") & (df.task == task)]
                  .groupby("model_family")]
    else:
        models = [df[(df.model_family == "mdm") & (df.method == who) & (df.task == task)].score.to_numpy(float)]
    models = [x for x in models if len(x) > 1]
    dof = sum(len(x) - 1 for x in models)
    return (sum(((x - x.mean()) ** 2).sum() for x in models) / dof, dof) if dof else (np.nan, 0)


def _n_seeds(df, task, who) -> int:
    return int(((df.model_family == "mdm") & (df.method == who) & (df.task == task)).sum())


def _sd_ratio(df: pd.DataFrame | None, task: str, a: str, b: str) -> tuple[float, float, float]:
    """SD(a) / SD(b) over seeds with its 95% interval from the F distribution of a variance ratio (normal
    seeds): nan when either side has fewer than 2 seeds."""
    from scipy.stats import f  # deferred: scipy.stats.f, only for this interval

    if df is None:
        return np.nan, np.nan, np.nan
    (va, da), (vb, db) = _spread(df, task, a), _spread(df, task, b)
    if not da or not db or vb == 0:
        return np.nan, np.nan, np.nan
    ratio = va / vb
    lo, hi = ratio / f.ppf(0.975, da, db), ratio / f.ppf(0.025, da, db)
    return float(np.sqrt(ratio)), float(np.sqrt(lo)), float(np.sqrt(hi))


def spread_table(df: pd.DataFrame) -> pd.DataFrame:
    """Run-to-run spread per task and row: the seed SD with its 95% interval (chi-square, normal seeds), the
    seed component alone (per-prompt sampling noise taken out: two-way ANOVA, where outcomes are kept), the
    worst run, and the SD's ratio to the ARMs' pooled seed SD with its F interval."""
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
        arm_var, _ = _spread(done, task, "arm")
        row["arm_sd"] = np.sqrt(arm_var) if not np.isnan(arm_var) else np.nan
        if family == "mdm":
            ratio = _sd_ratio(done, task, method, "arm")
            row["sd_over_arm"] = ratio[0]
            row["sd_over_arm_ci95"] = None if np.isnan(ratio[1]) else f"[{ratio[1]:.2f}, {ratio[2]:.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)
