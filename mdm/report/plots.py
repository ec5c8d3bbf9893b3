"""Report plots (seaborn, PNG): per-seed scores, loss curves with seed bands, variance bars, P-POTS densities."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Tight layout, 120 dpi PNG, figure closed (every report and perf-page plot)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@contextlib.contextmanager
def _seeded_numpy(seed: int):
    """Seed numpy's global generator for a block and restore its state after, so plots are reproducible."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def seed_scores(df: pd.DataFrame, out: Path, metric_label: str) -> list[Path]:
    """One panel per task: every seed as a dot, the mean with a 95% CI, methods ordered by mean."""
    paths = []
    for task, g in df.groupby("task", sort=False):
        order = g.groupby("method").score.mean().sort_values(ascending=False).index
        label = g.model_family.where(g.model_family != "mdm", g.method).str.replace("arm:", "ARM ")
        g = g.assign(row=label)
        order = g.groupby("row").score.mean().sort_values(ascending=False).index
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.5))
        with _seeded_numpy(0):  # stripplot draws its jitter from numpy's global generator
            sns.stripplot(data=g, y="row", x="score", order=order, color="0.35", size=5, jitter=0.15, ax=ax)
        sns.pointplot(data=g, y="row", x="score", order=order, color="C3", linestyle="none", errorbar=("ci", 95), seed=0,
                      markers="D", ax=ax)
        ax.set(xlabel=metric_label, ylabel="")
        ax.set_title(f"{task}: per-seed scores (dots),\nmean and bootstrap 95% CI over seeds (red)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        paths.append(save_figure(fig, out / f"scores_{task}.png"))
    return paths


def loss_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    """curves: columns task, method, seed, step, loss. Mean over seeds with a min-max band."""
    paths = []
    for task, g in curves.groupby("task", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4))
        sns.lineplot(data=g, x="step", y="loss", hue="method", errorbar=("pi", 100), estimator="mean", ax=ax)
        ax.set(title=f"{task}: training loss (mean over seeds, band = min..max)", xlabel="optimizer step",
               ylabel="training loss before control variate\n(nats per eligible token)")
        ax.legend(title="method", fontsize=8)
        paths.append(save_figure(fig, out / f"loss_{task}.png"))
    return paths


def variance_bars(variance_json: Path, out: Path) -> Path:
    data = json.loads(variance_json.read_text())
    rows = [{"method": m, "term": term, "variance": v[term]} for m, v in data["methods"].items() for term in "ABC"]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=df, x="method", y="variance", hue="term", ax=ax)
    ax.set(title="Loss variance decomposition: A pattern, B rate, C data",
           ylabel="variance of the per-sequence loss (nats^2)", xlabel="method")
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, out / "variance.png")


def ppots_densities(ppots_jsons: list[Path], out: Path) -> Path:
    """Every distinct fitted P-POTS density in one figure (runs that share a pilot share one curve), labelled
    by task and by the runs that use it."""
    curves: dict[tuple, list[str]] = {}
    for path in sorted(ppots_jsons):
        data = json.loads(path.read_text())
        key = (tuple(data["grid"]), tuple(round(d, 12) for d in data["density"]))
        task = data.get("task") or path.parent.parent.parent.name
        curves.setdefault(key, []).append(f"{task}: {path.parent.parent.name}/{path.parent.name}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for (grid, density), users in curves.items():
        label = users[0] if len(users) == 1 else f"{users[0].split(':')[0]}: {len(users)} runs (shared pilot)"
        ax.plot(grid, density, label=label)
    ax.axhline(1.0, color="0.5", linestyle="--", label="uniform (Standard)")
    ax.set(title="Fitted P-POTS sampling densities", xlabel="masking rate t", ylabel="density p(t)")
    ax.legend(fontsize=7)
    return save_figure(fig, out / "ppots_density.png")
