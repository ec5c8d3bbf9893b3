"""variance.png and ppots.png (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"A": "#4C72B0", "B": "#DD8452", "C": "#55A868"}


def _plt():
    import matplotlib  # deferred: matplotlib (slow import), only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: pyplot only after matplotlib.use("Agg")

    return plt


def plot_variance(result: dict, path: str | Path) -> Path:
    """Stacked A/B/C per method (batch view, error bar on the total), A_by_t and g(t) per method."""
    plt = _plt()
    methods = result["methods"]
    names = list(methods)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    bottom = np.zeros(len(names))
    for term in "ABC":
        vals = np.array([max(methods[n][term], 0.0) for n in names])
        ax.bar(names, vals, bottom=bottom, color=COLORS[term], label=f"{term} ({'pattern rate data'.split()['ABC'.index(term)]})")
        bottom += vals
    ax.errorbar(names, [methods[n]["total"] for n in names], yerr=[methods[n]["total_se"] for n in names],
                fmt="none", ecolor="k", capsize=3)
    unit = "trace of gradient covariance" if result.get("mode") == "gradient" else "loss variance"
    ax.set_ylabel(f"{unit} (x batch size, per-sample equivalent)")
    ax.set_title(f"A + B + C  (a={result['a']}, b={result['b']}, c={result['c']})")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    for n in names:
        m = methods[n]
        if not np.any(np.asarray(m["A_by_t"]) > 0):
            continue
        axes[1].plot(m["t"], m["A_by_t"], marker=".", label=n)
        axes[2].plot(m["t"], m["g_sample"], marker=".", label=n)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("t")
    axes[1].set_title("pattern noise of the back-propagated sample, A(t)")
    axes[2].set_xlabel("t")
    axes[2].set_title("mean of the back-propagated sample, g(t)")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    return _save(fig, result, path)


def plot_ppots(artifact: dict, path: str | Path) -> Path:
    """w(t) from the pilot (normalised) with the fitted density; g(t) and v(t)."""
    plt = _plt()
    target = artifact["target"]
    t, w = np.asarray(target["t"]), np.asarray(target["w"])
    grid, density = np.asarray(artifact["grid"]), np.asarray(artifact["density"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    # the fit compares shapes on the pilot's t range: give w the density's mass on that range
    inside = (grid >= t[0]) & (grid <= t[-1])
    mass = np.trapezoid(density[inside], grid[inside])
    wn = w / np.trapezoid(w, t) * mass
    label = "w(t) = sqrt(g^2 + v" + (" + v_x0" if artifact["full_second_moment"] else "") + ")"
    ax.scatter(t, wn, s=14, color="k", label=label + ", scaled to the fit's mass on the pilot range")
    fit = artifact.get("fit", {})
    label = f"{artifact['family'].upper()} fit" + (f", KL {fit['kl']:.2g}" if "kl" in fit else "")
    ax.plot(grid, density, color="C3", label=label + (f", mix {artifact['mix']}" if artifact["mix"] else ""))
    ax.axhline(1.0, color="gray", ls=":", label="uniform (Standard)")
    ax.set_xlabel("t")
    ax.set_ylabel("density")
    ax.set_title("P-POTS sampling density p(t)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, target["g"], marker=".", label="g(t) = E[l | t]")
    ax.plot(t, target["v"], marker=".", label="v(t): within-x0 variance (paper)")
    v_x0 = np.asarray(target["v_x0"], dtype=float)
    ax.plot(t, np.where(v_x0 > 0, v_x0, np.nan), marker=".", ls="--", label="v_x0(t): between-x0 (where > 0)")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title("pilot moments of the Standard loss")
    ax.legend(fontsize=8)
    return _save(fig, artifact, path)


def _save(fig, source: dict, path: str | Path) -> Path:
    """Title with the model and data the numbers come from, then write the PNG."""
    fig.suptitle(f"{source.get('model', '')} on {source.get('data', '')}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
