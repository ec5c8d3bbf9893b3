"""The nested Monte Carlo estimator recovers known A, B, C within its standard errors (synthetic losses)."""

from __future__ import annotations

import numpy as np
import pytest

from mdm.errors import ConfigError
from mdm.variance.estimator import BatchView, decompose, moments_by_t, paired_ratio, strata_of, t_grid

C1, D2 = 0.7, 0.5


def synthetic(a, b, c, seed, q=None, w=None):
    """l_ijk = f0(t_j) + z1_i f1 + z2_i f2(t_j) + sigma(t_j) eps_ijk, sample s = w_j l; returns (s, truth)."""
    t, pi = t_grid(b)
    q = pi if q is None else q
    w = np.ones(b) if w is None else w
    beta = np.sin(2 * np.pi * t) + 2 * t
    f = np.stack([1 + beta, np.full(b, C1), D2 * beta])  # g(z, t) = f0 + z1 f1 + z2 f2
    sigma = 0.3 + 1.5 * (1 - t) ** 2
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((a, 2))
    g = f[0][None] + z[:, :1] * f[1][None] + z[:, 1:] * f[2][None]
    raw = g[:, :, None] + sigma[None, :, None] * rng.standard_normal((a, b, c))
    wf = w * f

    def var_q(x):
        return (q * x**2).sum() - (q * x).sum() ** 2

    truth = {"A": (q * w**2 * sigma**2).sum(), "B": sum(var_q(x) for x in wf),
             "C": (q * wf[1]).sum() ** 2 + (q * wf[2]).sum() ** 2}
    truth["total"] = truth["A"] + truth["B"] + truth["C"]
    return w[None, :, None] * raw, truth, q, wf[0]


def replicate(n_rep, a, b, c, **kw):
    ests, ses = [], []
    for r in range(n_rep):
        s, truth, q, _ = synthetic(a, b, c, seed=100 + r, **kw)
        out = decompose(s, q, bootstrap=200, seed=r)
        ests.append([out[k] for k in ("A", "B", "C", "total")])
        ses.append([out[k + "_se"] for k in ("A", "B", "C", "total")])
    return np.array(ests), np.array(ses), truth


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform-t", "importance-weighted-t"])
def test_estimator_is_unbiased_and_its_bootstrap_se_matches_the_spread(weighted):
    b = 16
    t, pi = t_grid(b)
    kw = {}
    if weighted:  # P-POTS-like: t ~ q on the grid, sample weighted pi / q
        q = pi * (0.4 + 3 * t**2)
        q /= q.sum()
        kw = {"q": q, "w": pi / q}
    ests, ses, truth = replicate(40, a=40, b=b, c=6, **kw)
    for col, term in enumerate(("A", "B", "C", "total")):
        mean, spread = ests[:, col].mean(), ests[:, col].std(ddof=1)
        assert abs(mean - truth[term]) < 3.5 * spread / np.sqrt(len(ests)), (term, mean, truth[term])
        # the bootstrap SE of one pilot describes the spread of the estimate over pilots
        assert 0.6 < ses[:, col].mean() / spread < 1.6, (term, ses[:, col].mean(), spread)
        # and a single pilot lands within 3 of its own SEs most of the time
        assert np.mean(np.abs(ests[:, col] - truth[term]) < 3 * ses[:, col]) >= 0.85


def test_a_single_pilot_recovers_each_term_within_its_standard_errors():
    s, truth, q, _ = synthetic(60, 20, 8, seed=5)
    out = decompose(s, q, bootstrap=500, seed=0)
    for term in ("A", "B", "C", "total"):
        assert abs(out[term] - truth[term]) < 3 * out[term + "_se"], (term, out[term], truth[term])
    assert out["sample"]["total"] == out["total"]  # no stratification: batch view = single sample


def test_stratified_batch_view_removes_the_between_strata_variance_from_b():
    b, n = 24, 32
    view = BatchView.of("strats", n, None)
    assert view.k == 6 and view.phi == pytest.approx(1 - 2 * 4 / (32 * 5))
    rows = []
    for r in range(30):
        s, truth, q, wf0 = synthetic(40, b, 6, seed=300 + r)
        out = decompose(s, q, view=view, bootstrap=0)
        h = strata_of(q, 6)
        mass = np.array([q[h == k].sum() for k in range(6)])
        mu = np.array([(q * wf0)[h == k].sum() for k in range(6)]) / mass
        between = (mass * mu**2).sum() - ((mass * mu).sum()) ** 2
        rows.append([out["B"], truth["B"] - view.phi * between, out["sample"]["B"], out["total"],
                     out["sample"]["total"]])
    rows = np.array(rows)
    spread = rows[:, 0].std(ddof=1) / np.sqrt(len(rows))
    assert abs(rows[:, 0].mean() - rows[0, 1]) < 3.5 * spread
    assert np.all(rows[:, 0] < rows[:, 2])  # StraTS cuts B in the batch view
    assert np.allclose(rows[:, 3] - rows[:, 4], rows[:, 0] - rows[:, 2])


def test_paired_ratio_is_tighter_than_the_separate_standard_errors():
    s, *_ = synthetic(30, 12, 6, seed=8)
    base, halved = decompose(s, seed=1), decompose(0.5 * s, seed=1)
    ratio, se = paired_ratio(halved, base, "total")
    assert ratio == pytest.approx(0.25) and se < 1e-12  # the same resampled x0 in both: no noise at all


def test_vector_samples_decompose_as_the_sum_over_coordinates():
    s1, *_ = synthetic(10, 12, 4, seed=1)
    s2, *_ = synthetic(10, 12, 4, seed=2)
    both = decompose(np.stack([s1, s2], -1), bootstrap=0)
    one, two = decompose(s1, bootstrap=0), decompose(s2, bootstrap=0)
    for term in ("A", "B", "C", "total"):
        assert both[term] == pytest.approx(one[term] + two[term], rel=1e-10)


def test_a_table_constant_over_t_and_masks_has_zero_a_and_b_exactly():
    per_x0 = np.random.default_rng(0).gamma(2.0, size=7)
    out = decompose(np.broadcast_to(per_x0[:, None, None], (7, 5, 3)), bootstrap=100)
    assert out["A"] == 0 and out["B"] == 0 and out["A_se"] == 0 and out["B_se"] == 0
    assert out["C"] == pytest.approx(per_x0.var(ddof=1))


def test_estimate_is_deterministic_for_a_seed_and_moments_match_the_definitions():
    s, *_ = synthetic(8, 10, 5, seed=3)
    one, two = decompose(s, seed=4), decompose(s, seed=4)
    reps_one, reps_two = one.pop("replicates"), two.pop("replicates")
    assert one == two and all(np.array_equal(reps_one[k], reps_two[k]) for k in reps_one)
    m = moments_by_t(s)
    assert m["g"] == pytest.approx(s.mean((0, 2)))
    assert m["v"] == pytest.approx(s.var(2, ddof=1).mean(0))
    assert m["v_x0"] == pytest.approx(s.mean(2).var(0, ddof=1) - s.var(2, ddof=1).mean(0) / 5)


@pytest.mark.parametrize("shape,key", [((1, 5, 3), "pilot.a"), ((4, 5, 1), "pilot.c"), ((4, 1, 3), "pilot.b")])
def test_sizes_too_small_for_a_variance_are_clear_errors(shape, key):
    with pytest.raises(ConfigError) as info:
        decompose(np.ones(shape))
    assert info.value.where == key and "must be >= 2" in str(info.value)


def test_non_finite_losses_are_an_error_not_a_nan_result():
    s = np.ones((3, 4, 2))
    s[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        decompose(s)
