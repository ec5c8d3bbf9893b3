"""The paired bootstrap over seeds and prompts covers the true difference at its nominal rate (simulation), and
the permutation test is exact."""

from __future__ import annotations

import numpy as np
import pytest

from mdm.report.stats import bootstrap_interval, permutation_p, seed_component


def simulated_table(rng, seeds: int, prompts: int, gain: float, seed_sd: float) -> dict:
    """Outcomes of method `a` and Standard `s` on the same prompts: P(correct) = difficulty + gain + seed effect."""
    difficulty = rng.beta(2, 3, size=prompts)
    out = {}
    for name, d in (("a", gain), ("s", 0.0)):
        p = np.clip(difficulty[None] + d + rng.normal(0, seed_sd, size=(seeds, 1)), 0, 1)
        out[name] = (rng.random((seeds, prompts)) < p).astype(float)
    return out


def true_gain(gain: float, seed_sd: float) -> float:
    rng = np.random.default_rng(123)
    q, u = rng.beta(2, 3, size=2_000_000), rng.normal(0, seed_sd, size=(2, 2_000_000))
    return float((np.clip(q + gain + u[0], 0, 1) - np.clip(q + u[1], 0, 1)).mean())


@pytest.mark.parametrize("seeds, prompts, seed_sd", [(8, 500, 0.03), (3, 300, 0.02)])
def test_paired_bootstrap_covers_the_true_difference_at_its_nominal_rate(seeds, prompts, seed_sd):
    rng, truth, n_tables = np.random.default_rng(0), true_gain(0.05, seed_sd), 500
    hits = 0
    for i in range(n_tables):
        lo, hi = bootstrap_interval(simulated_table(rng, seeds, prompts, 0.05, seed_sd), lambda m: m["a"] - m["s"],
                                    n=1000, seed=i)
        hits += lo <= truth <= hi
    assert 0.92 <= hits / n_tables <= 0.98, hits / n_tables  # 95% nominal; the MC error of 500 tables is ~1%


def test_pairing_on_prompts_removes_prompt_difficulty_and_per_seed_scores_still_work():
    rng = np.random.default_rng(1)
    table = simulated_table(rng, 8, 400, 0.05, 0.02)
    lo, hi = bootstrap_interval(table, lambda m: m["a"] - m["s"])
    # the same outcomes with one method's prompts shuffled: no longer paired, so prompt difficulty adds noise
    shuffled = {"a": table["a"][:, rng.permutation(400)], "s": table["s"]}
    lo2, hi2 = bootstrap_interval(shuffled, lambda m: m["a"] - m["s"])
    assert hi - lo < 0.8 * (hi2 - lo2)
    per_seed = bootstrap_interval({k: v.mean(1) for k, v in table.items()}, lambda m: m["a"] - m["s"])
    assert per_seed[0] < table["a"].mean() - table["s"].mean() < per_seed[1]
    with pytest.raises(ValueError, match="same prompts"):
        bootstrap_interval({"a": table["a"], "s": table["s"][:, :10]}, lambda m: m["a"] - m["s"])


def test_seed_component_is_the_anova_estimate():
    rng = np.random.default_rng(2)
    g = rng.normal(0, 1, size=(1, 2000)) + rng.normal(0, 0.5, size=(40, 1)) + rng.normal(0, 1, size=(40, 2000))
    assert seed_component(g) == pytest.approx(0.25, rel=0.35)  # 40 seeds: the estimate's own error is ~25%
    assert seed_component(np.ones((5, 10))) == 0.0 and seed_component(np.ones((1, 10))) == 0.0


def test_permutation_p_is_exact():
    assert permutation_p([3, 4, 5], [0, 1, 2]) == pytest.approx(2 / 20)  # the two extreme splits of C(6, 3)
    assert permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert 0 < permutation_p(np.arange(10), np.arange(10) + 6) < 0.01  # 20 seeds: sampled relabellings
