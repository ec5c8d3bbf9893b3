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

from mdm.errors import ConfigError

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
    from mdm.eval.api import read_record, train_folder_record

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
        "decoding": _decoding_text(record.get("eval"), record.get("task")),
        "source": str(path),
    }


def _hardware_text(hw: dict | None) -> str | None:
    if not hw:
        return None
    device = f"{hw.get('gpu_count', 1)} x {hw['gpu']}" if hw.get("gpu") else f"CPU ({hw.get('cpu_count')} cores)"
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


# Our task name -> the paper CSV's, for paper-preset rows (the tiny tasks are different cells: no paper number)
PAPER_TASK = {"text-to-image": "text-to-image-2m"}


def paper_reference(benchmark: str) -> pd.DataFrame | None:
    """The paper's mean per (model_family, method, task), when the reference CSV for this benchmark exists."""
    name = {"table1": "paper_table1.csv", "table2": "paper_table2.csv"}.get(benchmark)
    path = REFERENCE_DIR / name if name else None
    if not path or not path.is_file():
        return None
    return pd.read_csv(path).groupby(["model_family", "method", "task"]).score.mean().rename("paper")


def leaderboard(df: pd.DataFrame, paper: pd.Series | None = None) -> pd.DataFrame:
    """Per task and method: every seed, mean, sample std, min, max, range, compute, best marked."""
    done = df[df.status == "done"].dropna(subset=["score"])
    rows = []
    for (family, method, task), g in done.groupby(["model_family", "method", "task"], sort=False):
        g = g.sort_values("seed")
        row = {"model_family": family, "method": method, "task": task, "n_seeds": len(g),
               "seeds": " ".join(f"{s:.2f}" for s in g.score),
               "mean": g.score.mean(), "std": g.score.std(ddof=1) if len(g) > 1 else float("nan"),
               "min": g.score.min(), "max": g.score.max(), "range": g.score.max() - g.score.min()}
        if "heldout_loss" in g and g.heldout_loss.notna().any():
            row["heldout_loss"] = g.heldout_loss.mean()
        for col in ("passes", "tokens", "wall_s"):
            if col in g and g[col].notna().any():
                row[col] = g[col].sum()
        if paper is not None:
            preset = g.preset.iloc[0] if "preset" in g else None
            paper_task = PAPER_TASK.get(task, task) if preset == "paper" else task
            row["paper"] = paper.get((family, method, paper_task), float("nan"))
        row["sources"] = ";".join(map(str, g.source))
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    board["is_arm"] = board.model_family != "mdm"
    board["best"] = False
    for _task, g in board[~board.is_arm].groupby("task"):
        if g["mean"].nunique() > 1:  # a tie across every row has no best
            board.loc[g.index[g["mean"] == g["mean"].max()], "best"] = True
    return board.sort_values(["is_arm", "task", "mean"], ascending=[True, True, False]).reset_index(drop=True)


def _bootstrap(groups: list[np.ndarray], combine, n: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% interval of combine(means) when every group's seeds are resampled independently."""
    rng = np.random.default_rng(seed)
    draws = [rng.choice(g, size=(n, len(g)), replace=True).mean(1) for g in groups]
    values = combine(*draws)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def synergy(df: pd.DataFrame, costs: dict[str, float] | None = None) -> pd.DataFrame:
    """For each combination 'a+b(+...)' whose parts and 'standard' were run: gains over Standard, their
    sum, synergy = gain(combo) - sum of gains, a bootstrap-over-seeds 95% interval, and gains per pass."""
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
            groups = [scores[combo], base] + [scores[p] for p in parts]

            def gains(c, s, *ps):
                return c - s, sum(p - s for p in ps)

            def syn(c, s, *ps):
                g_combo, g_sum = gains(c, s, *ps)
                return g_combo - g_sum

            g_combo, g_sum = gains(*(x.mean() for x in groups))
            lo, hi = _bootstrap(groups, syn)
            row = {"task": task, "combination": combo, "gain_combination": g_combo,
                   "gains_parts": " ".join(f"{p}:{scores[p].mean() - base.mean():+.2f}" for p in parts),
                   "sum_of_gains": g_sum, "synergy": g_combo - g_sum, "synergy_ci95_lo": lo, "synergy_ci95_hi": hi,
                   "n_seeds": min(len(x) for x in groups)}
            cost = costs.get(combo)
            if cost:
                row["gain_per_pass"] = g_combo / cost
                row["sum_of_gains_per_pass"] = sum(
                    (scores[p].mean() - base.mean()) / costs.get(p, 1.0) for p in parts)
            rows.append(row)
    return pd.DataFrame(rows)
