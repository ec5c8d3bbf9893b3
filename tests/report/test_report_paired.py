"""The seed-paired analysis, checked on simulated tables whose methods share seeds (mdm.report.stats.contrast and
the claims' tests): coverage at the nominal rate, width against the unpaired interval, false-positive rates of the
worst-run and spread tests at or below their level, exact multiplicity adjustments. Vectorised: a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from mdm.report.stats import (
    arcsine,
    benjamini_hochberg,
    bootstrap_interval,
    contrast,
    f_ratio,
    holm,
    min_p,
    mixed_contrast,
    paired_flip_p,
    pitman_morgan,
)

MU, SD_PROMPT, SD_SEED, SD_SHARED = -0.2, 1.0, 0.25, 0.3  # probit scale: prompt difficulty, seed, seed x prompt


def simulate(rng, tables: int, seeds: int, prompts: int, gain: float, rho: float) -> dict[str, np.ndarray]:
    """Outcomes of a method `a` and Standard `s` on the same prompts and seeds: correct when
    mu + gain + prompt + seed effect (correlated rho across the two methods at a seed) + seed x prompt (the seed's
    data order: shared by both) + noise > 0. Every table draws new prompts and seeds."""
    prompt = rng.normal(0, SD_PROMPT, (tables, 1, prompts))
    z = rng.normal(0, 1, (2, tables, seeds, 1))
    u_a, u_s = SD_SEED * z[0], SD_SEED * (rho * z[0] + np.sqrt(1 - rho**2) * z[1])
    shared = rng.normal(0, SD_SHARED, (tables, seeds, prompts))
    base = MU + prompt + shared
    return {"a": (base + gain + u_a + rng.normal(0, 1, base.shape) > 0).astype(float),
            "s": (base + u_s + rng.normal(0, 1, base.shape) > 0).astype(float)}


def truth(gain: float) -> float:
    """The population difference: P(correct) = Phi(mean / sqrt(1 + every variance))."""
    scale = np.sqrt(1 + SD_PROMPT**2 + SD_SEED**2 + SD_SHARED**2)
    return float(norm.cdf((MU + gain) / scale) - norm.cdf(MU / scale))


def paired_intervals(sim: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    est, var, df = mixed_contrast(sim["a"] - sim["s"])
    half = student_t.ppf(0.975, df) * np.sqrt(var)
    return est, est - half, est + half


@pytest.mark.parametrize("rho", [0.9, 0.0])
@pytest.mark.parametrize("seeds", [3, 8])
@pytest.mark.parametrize("gain", [0.0, 0.3])
def test_paired_interval_covers_at_its_nominal_rate(seeds, gain, rho):
    sim = simulate(np.random.default_rng(seeds + int(10 * gain) + int(10 * rho)), 500, seeds, 300, gain, rho=rho)
    _, lo, hi = paired_intervals(sim)
    cover = np.mean((lo <= truth(gain)) & (truth(gain) <= hi))
    print(f"seeds {seeds} gain {gain} seed correlation {rho}: paired coverage {cover:.3f}")
    assert 0.92 <= cover <= 0.98, cover


@pytest.mark.parametrize("seeds", [3, 8])
def test_paired_interval_is_at_most_half_the_unpaired_one_at_seed_correlation_09(seeds):
    sim = simulate(np.random.default_rng(7), 60, seeds, 1000, 0.3, rho=0.9)  # 1,112 prompts in Table 1
    _, lo, hi = paired_intervals(sim)
    unpaired = np.array([np.subtract(*bootstrap_interval({"a": sim["a"][i], "s": sim["s"][i]},
                                                         lambda m: m["a"] - m["s"], n=1000, seed=i)[::-1])
                         for i in range(60)])
    ratio = np.median(hi - lo) / np.median(unpaired)
    print(f"seeds {seeds}: median width paired / unpaired = {ratio:.3f}")
    assert ratio <= 0.5, ratio


def test_the_contrast_api_pairs_on_seeds_and_identical_rows_give_a_zero_width_interval():
    rng = np.random.default_rng(3)
    sim = simulate(rng, 1, 3, 200, 0.3, rho=0.9)
    c = contrast({"a": sim["a"][0], "s": sim["s"][0]}, {"a": 1.0, "s": -1.0})
    est, lo, hi = (100 * x[0] for x in paired_intervals(sim))
    assert (c.estimate, c.lo, c.hi) == pytest.approx((est, lo, hi)) and c.n_seeds == 3 and c.prompts == 200
    same = contrast({"a": sim["s"][0], "s": sim["s"][0]}, {"a": 1.0, "s": -1.0})
    assert (same.estimate, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0)
    per_seed = contrast({"a": np.array([0.5, 0.6, 0.7]), "s": np.array([0.4, 0.5, 0.62])}, {"a": 1.0, "s": -1.0})
    d = np.array([10, 10, 8.0])  # the paired t on per-seed scores
    half = student_t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (per_seed.lo, per_seed.hi) == pytest.approx((d.mean() - half, d.mean() + half))
    with pytest.raises(ValueError, match="same seeds and prompts"):
        contrast({"a": sim["a"][0], "s": sim["s"][0][:2]}, {"a": 1.0, "s": -1.0})


def test_sign_flip_test_is_exact_and_states_its_resolution():
    assert paired_flip_p([3, 4, 5], [0, 1, 2]) == pytest.approx(2 / 8) == min_p(3)  # 3 seeds: never below 0.25
    assert min_p(3, "greater") == 1 / 8 and min_p(8) == 2 / 256
    assert paired_flip_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert paired_flip_p(np.arange(8) + 5.0, np.arange(8.0), alternative="greater") == pytest.approx(1 / 256)


@pytest.mark.parametrize("seeds", [3, 8])
def test_worst_run_test_false_positive_rate_is_at_most_its_level(seeds):
    """No real difference (the two rows' runs exchangeable within a seed, seeds correlated): the one-sided
    randomisation test of min(a) - min(s) rejects at most 5% of the time (the old seed bootstrap: 8-10%)."""
    rng = np.random.default_rng(seeds)
    z = rng.normal(0, 1, (2000, seeds, 3))
    a, s = z[..., 0] + 0.9 * z[..., 2], z[..., 1] + 0.9 * z[..., 2]
    p = np.array([paired_flip_p(x, y, lambda u, v: u.min(-1) - v.min(-1), "greater") for x, y in zip(a, s)])
    rate = np.mean(p < 0.05)
    print(f"seeds {seeds}: worst-run false-positive rate {rate:.4f} at 0.05")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 2000), rate


def test_spread_tests_false_positive_rate_is_at_most_their_level():
    """Equal seed spreads on the arcsine scale, binomial scores on 1,112 prompts at other accuracies (an MDM near
    45%, an ARM near 85%): the F test of 'the MDM's SD exceeds the ARM's' and the paired Pitman-Morgan test of
    'a row narrows the spread' reject at most 5% of the time."""
    rng = np.random.default_rng(11)
    n, k, sd = 20_000, 8, 0.05

    def scores(theta, u):
        return 100 * rng.binomial(1112, np.sin(np.clip(theta + u, 0, np.pi / 2)) ** 2) / 1112

    mdm = arcsine(scores(0.74, rng.normal(0, sd, (n, k))))
    arm = arcsine(scores(1.17, rng.normal(0, sd, (n, 3))))
    p_f = f_ratio(mdm.var(1, ddof=1), k - 1, arm.var(1, ddof=1), 2)[3]
    z = rng.normal(0, sd, (2, n, k))
    x, y = arcsine(scores(0.74, z[0])), arcsine(scores(0.80, 0.9 * z[0] + np.sqrt(1 - 0.81) * z[1]))
    p_pm = pitman_morgan(x, y)[3]
    slack = 2 * np.sqrt(0.05 * 0.95 / n)
    print(f"F: {np.mean(p_f < 0.05):.4f}, Pitman-Morgan: {np.mean(p_pm < 0.05):.4f} at 0.05")
    assert np.mean(p_f < 0.05) <= 0.05 + slack and np.mean(p_pm < 0.05) <= 0.05 + slack


def test_pitman_morgan_interval_covers_the_sd_ratio():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1, (2, 4000, 6))
    x, y = 2 * z[0], 0.9 * z[0] + np.sqrt(1 - 0.81) * z[1]  # sd ratio 2, correlation 0.9
    _, lo, hi, _ = pitman_morgan(x, y)
    hits = np.mean((lo <= 2) & (2 <= hi))
    one = pitman_morgan(x[0], y[0])  # one pair of rows: the same numbers
    assert (float(one[1]), float(one[2])) == pytest.approx((lo[0], hi[0]))
    assert 0.93 <= hits <= 0.97, hits


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, np.nan, 0.2]
    assert holm(p)[[0, 1, 2, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert benjamini_hochberg(p)[[0, 1, 2, 4]] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert np.isnan(holm(p)[3]) and np.isnan(benjamini_hochberg(p)[3])
