"""Run records and per-seed CSVs -> one row per run (`load_scores`), with each run's per-prompt outcomes.

Input rows (one per run): model_family, method, task, seed, score, plus optional compute columns
(passes, tokens, wall_s) and `source` (the record path or CSV line every number traces to). A run whose samples
file kept per-prompt outcomes (0/1, a fraction, or a text-to-image caption's CLIP score / 100) that reproduce its
score gets them in `outcomes` (and `prompt_ids`), so comparisons pair on prompts as well as seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mdm.decoding import DEFAULT_KEY
from mdm.errors import ConfigError
from mdm.eval.api import read_record, train_folder_record

COLUMNS = ["model_family", "method", "task", "seed", "score"]


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
    if "clip" in evaluation:  # text-to-image: per-caption CLIP scores (0-100) in samples.jsonl beside the record
        return clip_outcomes(evaluation, path.with_name(evaluation.get("samples_file") or "samples.jsonl"), score)
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


def clip_outcomes(evaluation: dict, samples: Path, score: float) -> dict:
    """A text-to-image run's per-caption CLIP scores / 100 (and attribute correctness where the scenes are checked)
    when they reproduce the record's score, else {}."""
    if not samples.is_file():
        return {}
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    values = np.array([r.get("clip_score", np.nan) for r in rows], float) / 100
    if not len(values) or np.isnan(values).any() or not np.isclose(100 * values.mean(), score):
        return {}
    clip = (evaluation.get("clip") or {}).get("model") or "CLIP"
    out = {"outcomes": values, "prompt_ids": tuple(r.get("caption") for r in rows), "metric": f"CLIP score ({clip})"}
    checks = [(r.get("checks") or {}).get("all") for r in rows]
    if all(isinstance(c, bool) for c in checks):
        out["attribute_outcomes"] = np.array(checks, float)
    return out


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
