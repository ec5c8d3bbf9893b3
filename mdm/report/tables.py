"""Per-seed scores -> leaderboard and synergy tables.

Input rows (one per run): model_family, method, task, seed, score, plus optional compute columns
(passes, tokens, wall_s) and `source` (the record path or CSV line every number traces to).
Model family `mdm` rows are the methods; any other family (e.g. `arm:qwen2.5-7b-instruct`) is an ARM row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mdm.data import TASKS
from mdm.report.records import read_csv

REFERENCE_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"

def paper_rows(benchmark: str) -> pd.DataFrame | None:
    """The paper's per-seed rows for this benchmark (its reference CSV), when the file exists."""
    name = {"table1": "paper_table1.csv", "table2": "paper_table2.csv"}.get(benchmark)
    path = REFERENCE_DIR / name if name else None
    if not path or not path.is_file():
        return None
    df = read_csv(path)
    df["status"] = "done"
    return df


def paper_reference(benchmark: str) -> pd.DataFrame | None:
    """The paper's mean per (model_family, method, task), when the reference CSV for this benchmark exists."""
    rows = paper_rows(benchmark)
    return None if rows is None else rows.groupby(["model_family", "method", "task"]).score.mean().rename("paper")


def paper_task(task: str) -> str:
    """The paper's task a task stands for (its TaskSpec's `stands_for`: same format and scorer), else itself."""
    spec = TASKS.get(task)
    return spec.stands_for if spec is not None and spec.stands_for else task


COMPUTE = ("passes", "tokens", "wall_s")


def outcome_table(g: pd.DataFrame, column: str = "outcomes") -> tuple[np.ndarray, tuple | None]:
    """A group's runs as ([seeds, prompts] outcome array, the prompt ids) when every run kept the same prompts,
    else (the 1-D per-seed scores as fractions of 100, like the outcomes; None). `column`: another per-prompt
    outcome (text-to-image's `attribute_outcomes`), per-seed means of it when the prompts differ."""
    if column in g and g[column].notna().all() and g.prompt_ids.nunique() == 1:
        return np.stack(list(g[column])), g.prompt_ids.iloc[0]
    if column != "outcomes":
        return np.array([np.mean(x) for x in g[column]]), None
    return g.score.to_numpy(float) / 100, None


def paired(groups: dict[str, tuple[np.ndarray, tuple | None]]) -> dict[str, np.ndarray]:
    """Outcome tables (`outcome_table`) as paired tables when all are on the same prompt ids, else all as
    per-seed scores."""
    ids = {prompt_ids for _, prompt_ids in groups.values()}
    if len(ids) == 1 and None not in ids:
        return {k: table for k, (table, _) in groups.items()}
    return {k: (table.mean(1) if table.ndim == 2 else table) for k, (table, _) in groups.items()}


def aligned(done: pd.DataFrame, task: str, methods, column: str = "outcomes") -> tuple[dict[str, np.ndarray], list] | None:
    """The MDM rows `methods` of a task on the seeds they all ran (sorted): ({method: [seeds, prompts] outcomes on
    the same prompt ids, or 1-D per-seed scores / 100 when any row kept none}, the common seeds); None when a row is
    missing. The input of `mdm.report.stats.contrast`: a comparison is paired on seeds and prompts."""
    rows = {}
    for m in methods:
        g = done[(done.model_family == "mdm") & (done.method == m) & (done.task == task)]
        if g.empty or (column != "outcomes" and (column not in g or g[column].isna().any())):
            return None
        rows[m] = g.drop_duplicates("seed").set_index("seed")
    seeds = sorted(set.intersection(*(set(r.index) for r in rows.values())))
    if not seeds:
        return {m: np.zeros(0) for m in rows}, []
    tables = {m: outcome_table(r.loc[seeds].reset_index(), column) for m, r in rows.items()}
    return paired(tables), seeds


def _interval_text(lo: float, hi: float) -> str:
    return f"[{lo:+.1f}, {hi:+.1f}]"


# the paper's rows in its tables' order (PAPER.md); a method outside it is listed after them
PAPER_ORDER = ("ppots+mirror", "ppots", "mirror", "isad", "syrm", "strats", "ema", "clipped", "standard")
PAPER_ORDER_T2I = ("ppots+mirror", "standard", "ppots", "mirror")
BEST_RULE = ("`best`: the paper's method (released-code rows and compute baselines excluded) whose paired 95% "
             "interval over every other paper method run on the task, on their common seeds, lies above 0 (an "
             "intersection-union test: no multiplicity adjustment needed); no row when none does. Stated before "
             "ranking: never the top mean by itself.")


def paper_order(methods, task: str = "") -> list:
    """Methods in the paper's row order (Table 2's for text-to-image), the others after them, alphabetically."""
    order = PAPER_ORDER_T2I if "image" in task else PAPER_ORDER
    return [m for m in order if m in methods] + sorted(m for m in methods if m not in order)


def gain(done: pd.DataFrame, task: str, method: str, base: str = "standard"):
    """`method` minus `base` paired on their common seeds (`mdm.report.stats.Contrast`), or None without a row."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import contrast

    got = aligned(done, task, (method, base))
    if got is None or not got[1]:
        return None
    return contrast(got[0], {method: 1.0, base: -1.0})


def leaderboard(df: pd.DataFrame, paper: pd.Series | None = None) -> pd.DataFrame:
    """Per task and method: every seed, mean with its 95% interval, sample std, min, max, range, compute per
    run, the gain over Standard paired on their common seeds (`n_common`) with its 95% interval and an exact
    sign-flip p over those seeds (`p_seeds`, with the smallest p their number allows), the equal-compute gain, and
    `best` by the pre-stated rule BEST_RULE (mdm.report.stats)."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import bootstrap_interval, min_p, paired_flip_p

    done = df[df.status == "done"].dropna(subset=["score"])
    rows = []
    for (family, method, task), g in done.groupby(["model_family", "method", "task"], sort=False):
        g = g.sort_values("seed")
        table = outcome_table(g)[0]
        ci = bootstrap_interval({"m": table}, lambda m: 100 * m["m"]) if len(g) > 1 else None  # 1 seed: none
        metric = g.metric.dropna().iloc[0] if "metric" in g and g.metric.notna().any() else "score"
        row = {"model_family": family, "method": method, "task": task, "metric": metric, "n_seeds": len(g),
               "prompts": table.shape[1] if table.ndim == 2 else None,
               # the largest per-run standard error of the score (points): SE of a run's mean over its prompts
               # (the binomial SE for 0/1 outcomes)
               "se/run": 100 * float(np.sqrt(table.var(axis=1, ddof=0) / table.shape[1]).max())
               if table.ndim == 2 else None,
               "seeds": " ".join(f"{s:.2f}" for s in g.score),
               "mean": g.score.mean(), "ci95": f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else None,
               "std": g.score.std(ddof=1) if len(g) > 1 else float("nan"),
               "min": g.score.min(), "max": g.score.max(), "range": g.score.max() - g.score.min()}
        if "heldout_loss" in g and g.heldout_loss.notna().any():
            row["heldout_loss"] = g.heldout_loss.mean()
        if "decoding" in g and g.decoding.notna().any():
            row["decoding"] = " | ".join(sorted(set(g.decoding.dropna())))
        for col in COMPUTE:  # per run: a 1-seed row and a 3-seed row are comparable
            if col in g and g[col].notna().any():
                row[f"{col}/run"] = g[col].mean()
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    board["is_arm"] = board.model_family != "mdm"
    board["gain"], board["n_common"], board["gain_ci95"], board["p_seeds"] = np.nan, np.nan, None, None
    board["note"] = ""
    board["eq_compute_base"], board["eq_compute_gain"], board["eq_compute_ci95"] = None, np.nan, None
    board["heldout_delta"], board["heldout_delta_ci95"] = np.nan, None
    board["best"] = False
    for task, g in board[~board.is_arm].groupby("task"):
        if (g.method == "standard").any():
            for i, r in g.iterrows():
                if r.method == "standard":
                    continue
                c = gain(done, task, r.method)
                if c is None:
                    continue
                board.loc[i, "gain"], board.loc[i, "n_common"] = c.estimate, c.n_seeds
                if c.n_seeds > 1:  # a 1-seed comparison's seed noise is unknown: no interval
                    board.loc[i, "gain_ci95"] = _interval_text(c.lo, c.hi)
                    a, b = (done_scores(done, m, task, seeds=_common(done, task, r.method)) for m in (r.method,
                                                                                                     "standard"))
                    p = paired_flip_p(a, b)
                    board.loc[i, "p_seeds"] = f"{p:.3g} (min {min_p(len(a)):.3g})"
                held = [done_scores(done, m, task, "heldout_loss", _common(done, task, r.method))
                        for m in (r.method, "standard")] if "heldout_loss" in done else []
                if held and min(map(len, held)) > 1 and len(held[0]) == len(held[1]):
                    d = held[0] - held[1]  # the low-noise signal: held-out MDM loss minus Standard's, seed by seed
                    board.loc[i, "heldout_delta"] = d.mean()
                    board.loc[i, "heldout_delta_ci95"] = _paired_t_text(d)
                if _identical_on_common_seeds(done, r.method, task):
                    why = "; the EMA control variate is gradient-neutral (METHODS.md 8)" if "ema" in r.method else ""
                    board.loc[i, "note"] = f"identical to standard on every common seed{why}"
                mixed = _other_kernels(done, r.method, task)
                if mixed:
                    board.loc[i, "note"] = (board.loc[i, "note"] + "; " if board.loc[i, "note"] else "") + mixed
        _equal_compute(board, g, done, task)
        _best(board, g, done, task)
        if paper is not None:
            paper_name = paper_task(task)
            base = paper.get(("mdm", "standard", paper_name), np.nan)
            for i, r in g.iterrows():
                board.loc[i, "paper"] = paper.get(("mdm", r.method, paper_name), np.nan)
                board.loc[i, "paper_task"] = paper_name
                board.loc[i, "paper_gain"] = board.loc[i, "paper"] - base
    board["sources"] = [";".join(map(str, done[(done.model_family == r.model_family) & (done.method == r.method)
                                                & (done.task == r.task)].sort_values("seed").source))
                        for r in board.itertuples()]
    return board.sort_values(["is_arm", "task", "mean"], ascending=[True, True, False]).reset_index(drop=True)


def _common(done: pd.DataFrame, task: str, method: str, base: str = "standard") -> list:
    got = aligned(done, task, (method, base))
    return got[1] if got else []


def _paired_t_text(d: np.ndarray) -> str:
    """95% paired t interval of per-seed differences d."""
    # deferred: scipy, only for intervals
    from scipy.stats import t as student_t

    half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"[{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]"


def _best(board: pd.DataFrame, g: pd.DataFrame, done: pd.DataFrame, task: str) -> None:
    """BEST_RULE: a paper method whose paired interval over every other paper method of the task is above 0."""
    order = PAPER_ORDER_T2I if "image" in task else PAPER_ORDER
    rivals = [m for m in g.method if m in order]
    for i, r in g.iterrows():
        if r.method not in order or len(rivals) < 2:
            continue
        wins = [gain(done, task, r.method, other) for other in rivals if other != r.method]
        board.loc[i, "best"] = all(c is not None and c.n_seeds > 1 and c.lo > 0 for c in wins)


def other_machines(done: pd.DataFrame, task: str, methods) -> dict[str, frozenset]:
    """The kernels each MDM row of `methods` ran on, when they are not one set (runs on other machines start from
    other cached tiny bases, so comparing them is no paired comparison); {} when they are, or are not recorded."""
    if "kernels" not in done:
        return {}
    sets = {m: frozenset(done[(done.model_family == "mdm") & (done.method == m) & (done.task == task)].kernels.dropna())
            for m in methods}
    return sets if len({k for k in sets.values() if k}) > 1 else {}


def _other_kernels(done: pd.DataFrame, method: str, task: str) -> str:
    """The leaderboard's note when a row's runs ran on other kernels than Standard's, else ''."""
    sets = other_machines(done, task, (method, "standard"))
    if not sets:
        return ""
    return (f"ran on {', '.join(sorted(sets[method]))}, standard on {', '.join(sorted(sets['standard']))}: other "
            "machines (another base); the gain is not a paired comparison")


def is_compute_baseline(method: str) -> bool:
    """Standard, and Standard given k times its passes (`multisample<k>`: k independent masks per sequence)."""
    return method == "standard" or (method.startswith("multisample") and method[len("multisample"):].isdigit())


def _equal_compute(board: pd.DataFrame, g: pd.DataFrame, done: pd.DataFrame, task: str) -> None:
    """Each row's gain over the baseline row that spent the same forward/backward passes per run (within 2%):
    Standard for a 1-pass method, `multisample2` for a 2-view one; none where no baseline matches. Paired on their
    common seeds."""
    if "passes/run" not in g:
        return
    bases = g[g.method.map(is_compute_baseline) & g["passes/run"].notna()]
    for i, r in g.iterrows():
        if np.isnan(r["passes/run"]) or is_compute_baseline(r.method):
            continue
        match = bases[(bases["passes/run"] - r["passes/run"]).abs() <= 0.02 * r["passes/run"]]
        if match.empty:
            continue
        b = match.iloc[0]
        c = gain(done, task, r.method, b.method)
        board.loc[i, "eq_compute_base"] = b.method
        if c is None:
            continue
        board.loc[i, "eq_compute_gain"] = c.estimate
        if c.n_seeds > 1:
            board.loc[i, "eq_compute_ci95"] = _interval_text(c.lo, c.hi)


def _identical_on_common_seeds(done: pd.DataFrame, method: str, task: str) -> bool:
    """Every seed both rows ran scores the same and has the same held-out loss (a row may run fewer seeds)."""
    rows = [done[(done.model_family == "mdm") & (done.method == m) & (done.task == task)].set_index("seed")
            for m in (method, "standard")]
    common = rows[0].index.intersection(rows[1].index)
    cols = [c for c in ("score", "heldout_loss") if c in done]
    return len(common) > 0 and all(rows[0].loc[common, c].equals(rows[1].loc[common, c]) for c in cols)


def done_scores(done: pd.DataFrame, method: str, task: str, column: str = "score", seeds=None) -> np.ndarray:
    """The MDM row's per-run values of `column` (missing ones dropped), by seed; only `seeds` when given."""
    rows = done[(done.model_family == "mdm") & (done.method == method) & (done.task == task)].sort_values("seed")
    if seeds is not None:
        rows = rows[rows.seed.isin(seeds)]
    return rows[column].dropna().to_numpy(float)


def synergy(df: pd.DataFrame, costs: dict[str, float] | None = None) -> pd.DataFrame:
    """For each combination 'a+b(+...)' whose parts and 'standard' were run: on the seeds all of them share, gains
    over Standard, their sum, synergy = gain(combo) - sum of gains with its paired 95% interval and p (seeds and,
    where per-prompt outcomes are kept, prompts: mdm.report.stats.contrast), and gains per pass."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import contrast

    mdm = df[(df.status == "done") & (df.model_family == "mdm")].dropna(subset=["score"])
    costs = costs or {}
    rows = []
    for task, g in mdm.groupby("task", sort=False):
        methods = set(g.method)
        if "standard" not in methods:
            continue
        for combo in sorted(m for m in methods if "+" in m):
            parts = combo.split("+")
            if not all(p in methods for p in parts):
                continue
            groups, seeds = aligned(mdm, task, [combo, "standard", *parts])
            if not seeds:
                continue
            gains = {m: 100 * (np.mean(groups[m]) - np.mean(groups["standard"])) for m in (combo, *parts)}
            weights = {combo: 1.0, "standard": len(parts) - 1.0, **{p: -1.0 for p in parts}}
            c = contrast(groups, weights)
            g_sum = sum(gains[p] for p in parts)
            row = {"task": task, "combination": combo, "gain_combination": gains[combo],
                   "gains_parts": " ".join(f"{p}:{gains[p]:+.2f}" for p in parts),
                   "sum_of_gains": g_sum, "synergy": c.estimate, "synergy_ci95_lo": c.lo, "synergy_ci95_hi": c.hi,
                   "p": c.p, "n_seeds": len(seeds), "paired_on_prompts": all(np.ndim(t) == 2 for t in groups.values())}
            cost = costs.get(combo)
            if cost:
                row["gain_per_pass"] = gains[combo] / cost
                row["sum_of_gains_per_pass"] = sum(gains[p] / costs.get(p, 1.0) for p in parts)
            rows.append(row)
    return pd.DataFrame(rows)
