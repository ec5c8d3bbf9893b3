"""Per-seed scores -> leaderboard and synergy tables.

Input rows (one per run): model_family, method, task, seed, score, plus optional compute columns
(passes, tokens, wall_s) and `source` (the record path or CSV line every number traces to).
Model family `mdm` rows are the methods; any other family (e.g. `arm:qwen2.5-7b-instruct`) is an ARM row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mdm.data import TASKS
from mdm.decoding import DEFAULT_KEY
from mdm.errors import ConfigError
from mdm.eval.api import read_record, train_folder_record

COLUMNS = ["model_family", "method", "task", "seed", "score"]
REFERENCE_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(str(path), f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    df["source"] = [f"{path}:{i + 2}" for i in range(len(df))]
    df["benchmark"] = path.stem
    return df


def read_records(root: Path, warn=None) -> pd.DataFrame:
    """Every `record.json` under root (`mdm bench`), and every `mdm train` folder (result.json, run_config.json,
    and record.json if `mdm eval` wrote one). A record that cannot be read is skipped with a line to `warn`
    naming the file; a folder with no run at all is a ConfigError."""
    rows = []
    paths = {*root.rglob("record.json"), *(p.with_name("record.json") for p in root.rglob("result.json"))}
    for path in sorted(paths):
        if any(".stale-" in part for part in path.relative_to(root).parts):  # set aside by --rerun-stale
            continue
        try:
            record = read_record(path)
        except ConfigError as e:
            if warn:
                warn(f"skipped {e}")
            continue
        train = train_folder_record(path, path.parent / "model")
        if train and "benchmark" not in record:  # an `mdm train` folder
            train["benchmark"] = root.resolve().name
        rows.append(record_row({**train, **record}, path))
    other = [r for r in rows if r["decoding_key"] != DEFAULT_KEY]
    if other and warn:  # scores decoded otherwise are never compared with the paper-decoding ones
        warn(f"left out {len(other)} record(s) whose score used another decoding than {DEFAULT_KEY!r} "
             f"({', '.join(sorted({r['decoding_key'] for r in other}))})")
    rows = [r for r in rows if r["decoding_key"] == DEFAULT_KEY]
    if not rows:
        raise ConfigError(str(root), "no runs here (record.json of mdm bench, or result.json of mdm train)")
    return pd.DataFrame(rows)


def record_row(record: dict, path: Path) -> dict:
    metrics = record.get("metrics") or {}
    return {
        "benchmark": record.get("benchmark", path.parents[3].name if len(path.parents) > 3 else ""),
        "model_family": record.get("model_family", "mdm"),
        "method": record.get("method"),
        "task": record.get("task"),
        "seed": record.get("seed"),
        "score": primary_score(metrics),
        "heldout_loss": metrics.get("heldout_loss"),
        "status": record.get("status", "done"),
        "reason": record.get("reason", ""),
        "passes": record.get("passes"),
        "tokens": record.get("tokens"),
        "wall_s": record.get("wall_time_s", record.get("wall_s")),
        "preset": record.get("preset"),
        "hardware": _hardware_text(record.get("hardware")),
        "kernels": _kernels(record.get("hardware")),
        "decoding": _decoding_text(record.get("eval"), record.get("task")),
        # the decoding the score used (mdm.decoding.decoding_key); `mdm eval --decoding` never writes metrics.score
        "decoding_key": metrics.get("decoding", DEFAULT_KEY),
        "source": str(path),
        **prompt_outcomes(record, path),
    }


def prompt_outcomes(record: dict, path: Path) -> dict:
    """The run's per-prompt outcomes (0/1, or a fraction in [0, 1]) on its primary score, from the samples file beside the record
    ({outcomes, prompt_ids}), when they are kept and reproduce the record's score; else {}."""
    evaluation = (record.get("eval") or {}).get(record.get("task")) or {}
    primary = (evaluation.get("scores") or {}).get("primary")
    samples = path.with_name(evaluation.get("samples_file") or "-")
    score = primary_score(record.get("metrics") or {})
    if not primary or not samples.is_file():
        return {}
    ids, values = [], []
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        keys = [k for k in sample.get("scores") or {} if primary == k or primary.endswith("_" + k)]
        value = sample["scores"][keys[0]] if len(keys) == 1 else None
        if not isinstance(value, (bool, int, float)) or not 0 <= value <= 1:
            return {}
        ids.append(sample.get("id", sample.get("i")))
        values.append(float(value))
    outcomes = np.array(values)
    if not len(outcomes) or not np.isclose(100 * outcomes.mean(), score):
        return {}
    return {"outcomes": outcomes, "prompt_ids": tuple(ids), "metric": f"accuracy % ({primary})"}


def _kernels(hw: dict | None) -> str | None:
    """What float32 results depend on across machines: the GPU, or the CPU's SIMD level torch used (the cached tiny
    base a run fine-tunes is built on the run's machine, so runs on other kernels start from another base)."""
    if not hw:
        return None
    return f"{hw['gpu']}" if hw.get("gpu") else hw.get("cpu_capability")


def _hardware_text(hw: dict | None) -> str | None:
    if not hw:
        return None
    if hw.get("gpu"):
        device = f"{hw.get('gpu_count', 1)} x {hw['gpu']}"
    else:  # float32 results depend on the kernels: the CPU and the SIMD level torch used (tests/README.md)
        cpu = ", ".join(str(x) for x in (hw.get("cpu"), hw.get("cpu_capability") or "capability not recorded") if x)
        device = f"CPU ({cpu}; {hw.get('cpu_count')} cores)"
    return f"{device}, torch {hw.get('torch')}, {hw.get('platform')}"


def _decoding_text(evaluation: dict | None, task: str | None) -> str | None:
    decoding = ((evaluation or {}).get(task) or {}).get("decoding")
    return json.dumps(decoding, sort_keys=True) if decoding else None


def primary_score(metrics: dict) -> float:
    """The number a leaderboard ranks: the task score (accuracy %, CLIP score). The held-out loss is a
    separate column (`heldout_loss`), never mixed into the score."""
    for key in ("score", "accuracy", "clip_score"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return float("nan")


def load_scores(paths: list[str | Path], warn=None) -> pd.DataFrame:
    frames = []
    for p in map(Path, paths):
        if p.is_dir():
            frames.append(read_records(p, warn))
        elif p.suffix == ".csv" and p.is_file():
            frames.append(read_csv(p))
        else:
            raise ConfigError(str(p), "not a run-records folder or a .csv with columns " + ", ".join(COLUMNS))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if "status" not in df:
        df["status"] = "done"
    df["status"] = df["status"].fillna("done")
    return df


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


def outcome_table(g: pd.DataFrame) -> tuple[np.ndarray, tuple | None]:
    """A group's runs as ([seeds, prompts] outcome array, the prompt ids) when every run kept the same prompts,
    else (the 1-D per-seed scores as fractions of 100, like the outcomes; None)."""
    if "outcomes" in g and g.outcomes.notna().all() and g.prompt_ids.nunique() == 1:
        return np.stack(list(g.outcomes)), g.prompt_ids.iloc[0]
    return g.score.to_numpy(float) / 100, None


def paired(groups: dict[str, tuple[np.ndarray, tuple | None]]) -> dict[str, np.ndarray]:
    """Outcome tables (`outcome_table`) as paired tables when all are on the same prompt ids, else all as
    per-seed scores."""
    ids = {prompt_ids for _, prompt_ids in groups.values()}
    if len(ids) == 1 and None not in ids:
        return {k: table for k, (table, _) in groups.items()}
    return {k: (table.mean(1) if table.ndim == 2 else table) for k, (table, _) in groups.items()}


def _interval_text(lo: float, hi: float) -> str:
    return f"[{lo:+.1f}, {hi:+.1f}]"


def leaderboard(df: pd.DataFrame, paper: pd.Series | None = None) -> pd.DataFrame:
    """Per task and method: every seed, mean with its 95% interval, sample std, min, max, range, compute per
    run, the gain over Standard with a paired 95% interval and a permutation p over seeds, and `best` only
    where the paired interval of the best row's lead over the runner-up excludes 0 (mdm.report.stats)."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import bootstrap_interval, permutation_p

    done = df[df.status == "done"].dropna(subset=["score"])
    rows, tables = [], {}
    for (family, method, task), g in done.groupby(["model_family", "method", "task"], sort=False):
        g = g.sort_values("seed")
        tables[(family, method, task)] = outcome_table(g)
        table = tables[(family, method, task)][0]
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
        for col in COMPUTE:  # per run: a 1-seed row and a 3-seed row are comparable
            if col in g and g[col].notna().any():
                row[f"{col}/run"] = g[col].mean()
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    board["is_arm"] = board.model_family != "mdm"
    board["gain"], board["gain_ci95"], board["p_seeds"], board["note"] = np.nan, None, np.nan, ""
    board["eq_compute_base"], board["eq_compute_gain"], board["eq_compute_ci95"] = None, np.nan, None
    board["heldout_delta"], board["heldout_delta_ci95"] = np.nan, None
    board["best"] = False
    for task, g in board[~board.is_arm].groupby("task"):
        std_key = ("mdm", "standard", task)
        if std_key in tables:
            std_row = g[g.method == "standard"].iloc[0]
            for i, r in g.iterrows():
                if r.method == "standard":
                    continue
                board.loc[i, "gain"] = r["mean"] - std_row["mean"]
                if min(r.n_seeds, std_row.n_seeds) > 1:  # a 1-seed row's own seed noise is unknown: no interval
                    # (baseline, method) order, as mdm.report.claims: the same draws, the same interval
                    pair = paired({"s": tables[std_key], "m": tables[("mdm", r.method, task)]})
                    board.loc[i, "gain_ci95"] = _interval_text(*bootstrap_interval(
                        pair, lambda m: 100 * (m["m"] - m["s"])))
                    board.loc[i, "p_seeds"] = permutation_p(done_scores(done, r.method, task),
                                                            done_scores(done, "standard", task))
                held = [done_scores(done, m, task, "heldout_loss") for m in (r.method, "standard")] \
                    if "heldout_loss" in done else []
                if held and min(map(len, held)) > 1:  # the low-noise signal: held-out MDM loss, minus Standard's
                    board.loc[i, "heldout_delta"] = held[0].mean() - held[1].mean()
                    lo, hi = bootstrap_interval({"m": held[0], "s": held[1]}, lambda m: m["m"] - m["s"])
                    board.loc[i, "heldout_delta_ci95"] = f"[{lo:+.4f}, {hi:+.4f}]"
                if _identical_on_common_seeds(done, r.method, task):
                    why = "; the EMA control variate is gradient-neutral (METHODS.md 8)" if "ema" in r.method else ""
                    board.loc[i, "note"] = f"identical to standard on every seed{why}"
                mixed = _other_kernels(done, r.method, task)
                if mixed:
                    board.loc[i, "note"] = (board.loc[i, "note"] + "; " if board.loc[i, "note"] else "") + mixed
        _equal_compute(board, g, tables, task)
        ranked = g.sort_values("mean", ascending=False)
        if len(ranked) > 1 and ranked["mean"].iloc[0] > ranked["mean"].iloc[1] and ranked.n_seeds.iloc[:2].min() > 1:
            top, second = ranked.iloc[0], ranked.iloc[1]
            pair = paired({"a": tables[("mdm", top.method, task)], "b": tables[("mdm", second.method, task)]})
            lo, _ = bootstrap_interval(pair, lambda m: m["a"] - m["b"])
            board.loc[ranked.index[0], "best"] = lo > 0
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


def _equal_compute(board: pd.DataFrame, g: pd.DataFrame, tables: dict, task: str) -> None:
    """Each row's gain over the baseline row that spent the same forward/backward passes per run (within 2%):
    Standard for a 1-pass method, `multisample2` for a 2-view one; none where no baseline matches."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import bootstrap_interval

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
        board.loc[i, "eq_compute_base"] = b.method
        board.loc[i, "eq_compute_gain"] = r["mean"] - b["mean"]
        if min(r.n_seeds, b.n_seeds) > 1:
            pair = paired({"b": tables[("mdm", b.method, task)], "m": tables[("mdm", r.method, task)]})
            board.loc[i, "eq_compute_ci95"] = _interval_text(*bootstrap_interval(
                pair, lambda m: 100 * (m["m"] - m["b"])))


def _identical_on_common_seeds(done: pd.DataFrame, method: str, task: str) -> bool:
    """Every seed both rows ran scores the same and has the same held-out loss (a row may run fewer seeds)."""
    rows = [done[(done.model_family == "mdm") & (done.method == m) & (done.task == task)].set_index("seed")
            for m in (method, "standard")]
    common = rows[0].index.intersection(rows[1].index)
    cols = [c for c in ("score", "heldout_loss") if c in done]
    return len(common) > 0 and all(rows[0].loc[common, c].equals(rows[1].loc[common, c]) for c in cols)


def done_scores(done: pd.DataFrame, method: str, task: str, column: str = "score") -> np.ndarray:
    """The MDM row's per-run values of `column` (missing ones dropped)."""
    rows = done[(done.model_family == "mdm") & (done.method == method) & (done.task == task)]
    return rows[column].dropna().to_numpy(float)


def synergy(df: pd.DataFrame, costs: dict[str, float] | None = None) -> pd.DataFrame:
    """For each combination 'a+b(+...)' whose parts and 'standard' were run: gains over Standard, their
    sum, synergy = gain(combo) - sum of gains with a paired 95% interval (bootstrap over seeds and, where
    per-prompt outcomes are kept, prompts: mdm.report.stats), and gains per pass."""
    # deferred: mdm.report.stats imports scipy, only for intervals and p-values
    from mdm.report.stats import bootstrap_interval

    mdm = df[(df.status == "done") & (df.model_family == "mdm")].dropna(subset=["score"])
    costs = costs or {}
    rows = []
    for task, g in mdm.groupby("task", sort=False):
        scores = {m: s.score.to_numpy(float) for m, s in g.groupby("method")}
        if "standard" not in scores:
            continue
        for combo in sorted(m for m in scores if "+" in m):
            parts = combo.split("+")
            if not all(p in scores for p in parts):
                continue
            base = scores["standard"]
            names = [combo, "standard", *parts]
            groups = paired({m: outcome_table(g[g.method == m].sort_values("seed")) for m in names})

            def syn(m, combo=combo, parts=parts):
                return 100 * ((m[combo] - m["standard"]) - sum(m[p] - m["standard"] for p in parts))

            g_combo = scores[combo].mean() - base.mean()
            g_sum = sum(scores[p].mean() - base.mean() for p in parts)
            lo, hi = bootstrap_interval(groups, syn)
            row = {"task": task, "combination": combo, "gain_combination": g_combo,
                   "gains_parts": " ".join(f"{p}:{scores[p].mean() - base.mean():+.2f}" for p in parts),
                   "sum_of_gains": g_sum, "synergy": g_combo - g_sum, "synergy_ci95_lo": lo, "synergy_ci95_hi": hi,
                   "n_seeds": min(len(scores[m]) for m in names),
                   "paired_on_prompts": all(t.ndim == 2 for t in groups.values())}
            cost = costs.get(combo)
            if cost:
                row["gain_per_pass"] = g_combo / cost
                row["sum_of_gains_per_pass"] = sum(
                    (scores[p].mean() - base.mean()) / costs.get(p, 1.0) for p in parts)
            rows.append(row)
    return pd.DataFrame(rows)
