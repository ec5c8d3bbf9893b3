"""METHODS.md section 11: every estimator property as a test that fails if the property breaks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mdm.objective import ARMObjective, MDMBatch, MDMObjective, Method
from mdm.objective.components.t_samplers import GridDensity, Stratified
from mdm.objective.objective import EPS
from mdm.objective.rng import generator
from tests.helpers import MASK_ID, synthetic_batch, table_ce
from tests.numerics import approx

TABLE = torch.rand(64, 64, generator=torch.Generator().manual_seed(7)) * 3
SKEWED = {"grid": [i / 20 for i in range(1, 20)], "density": [0.3 + 4 * (i / 20) ** 2 for i in range(1, 20)]}


def objective(spec, **kw):
    if isinstance(spec, str) and "ppots" in spec:
        spec = {"preset": spec, "t_sampler": {"density": SKEWED}}
    return MDMObjective(spec, MASK_ID, **kw)


def monte_carlo(obj, batch, token_ce, steps, seed=0):
    losses = torch.tensor([obj(token_ce, batch, seed=seed, step=s).loss.item() for s in range(steps)])
    return losses.mean().item(), losses.std().item() / math.sqrt(steps)


@pytest.mark.numerics
def test_standard_loss_matches_the_formula_by_hand():
    batch = synthetic_batch(4)
    obj = objective("standard")
    draws = obj.draw(batch, seed=3, step=1)
    out = obj.loss(table_ce(TABLE), batch, draws)
    expected = []
    for r in range(batch.size):
        p = (1 - EPS) * draws.t[r].item() + EPS
        L = int(batch.attention_mask[r].sum())
        eligible = [i for i in range(L) if i >= batch.prompt_lengths[r]]
        masked = [i for i in eligible if draws.masked[0, r, i]]
        expected.append(sum(TABLE[batch.input_ids[r, i], i].item() / p for i in masked) / len(eligible))
    assert out.loss.item() == approx(sum(expected) / len(expected))  # another summation order: float32 tolerance
    # the eligible set is exactly the non-padding response
    assert torch.equal(draws.eligible, batch.response_mask())
    assert not (draws.masked[0] & ~draws.eligible).any()


def test_rows_without_masked_or_eligible_tokens_contribute_zero():
    batch = synthetic_batch(3)
    batch.prompt_lengths[1] = batch.attention_mask[1].sum()  # row 1: no response at all
    obj = objective("standard")
    draws = obj.draw(batch, seed=0, step=0)
    draws.masked[0, 2] = False  # row 2: nothing masked
    out = obj.loss(table_ce(TABLE), batch, draws)
    assert out.row_losses[1] == 0 and out.row_losses[2] == 0
    assert torch.isfinite(out.loss)


def test_mask_token_id_is_required_from_config():
    with pytest.raises(ValueError, match="mask_token_id"):
        MDMObjective("standard", None)


FIXED_TABLE_UNBIASED = ["ppots", "mirror", "isad", "strats", "lattice", "exact_count", "multisample2",
                        "ppots+mirror+strats"]


def test_target_value_of_the_fixed_table():
    """Under a fixed table E[l | t] is the same for every t: (1/|E|) sum_i CE_i, averaged over rows."""
    batch = synthetic_batch(8)
    eligible = batch.response_mask()
    pos = torch.arange(batch.input_ids.shape[1])[None].expand_as(batch.input_ids)
    per_row = (TABLE[batch.input_ids, pos] * eligible).sum(1) / eligible.sum(1)
    mean, se = monte_carlo(objective("standard"), batch, table_ce(TABLE), 600)
    assert abs(mean - per_row.mean().item()) < 4 * se


@pytest.mark.parametrize("method", FIXED_TABLE_UNBIASED)
def test_unbiased_with_a_fixed_loss_table(method):
    batch = synthetic_batch(8)
    eligible = batch.response_mask()
    pos = torch.arange(batch.input_ids.shape[1])[None].expand_as(batch.input_ids)
    target = ((TABLE[batch.input_ids, pos] * eligible).sum(1) / eligible.sum(1)).mean().item()
    mean, se = monte_carlo(objective(method), batch, table_ce(TABLE), 600)
    assert se > 0
    assert abs(mean - target) < 4 * se, (method, mean, target, se)


@pytest.mark.parametrize("method", ["ppots", "mirror", "strats", "lattice", "multisample2", "ppots+mirror+strats"])
def test_unbiased_when_the_loss_depends_on_x_t(method):
    """Methods that keep each view's (t, mask) marginal stay unbiased for any loss, not just a fixed table."""
    batch = synthetic_batch(8)
    ce = table_ce(TABLE, depends_on_mask=True)
    ref, ref_se = monte_carlo(objective("standard"), batch, ce, 1500, seed=11)
    mean, se = monte_carlo(objective(method), batch, ce, 1500, seed=12)
    assert abs(mean - ref) < 4 * math.hypot(se, ref_se), (method, mean, ref)


@pytest.mark.parametrize("method", ["clipped", "ppots_released", "isad_released", "mirror_released_plus"])
def test_biased_variants_are_detectably_biased(method):
    """The biased variants must really differ (else the unbiasedness tests above prove nothing)."""
    batch = synthetic_batch(8)
    # half the response are delimiters, so isad_released's p/q^2 weight shows
    batch.delimiter_mask = batch.response_mask() & (torch.arange(24)[None] % 2 == 0)
    ce = table_ce(TABLE * 8, depends_on_mask=True)  # large losses so the released clamps at 10 bite
    ref, ref_se = monte_carlo(objective("standard"), batch, ce, 800, seed=1)
    mean, se = monte_carlo(objective(method), batch, ce, 800, seed=2)
    assert abs(mean - ref) > 5 * math.hypot(se, ref_se), (method, mean, ref)
    assert not Method.build(method if "ppots" not in method else {"preset": method}).unbiased


def test_released_mirror_plus_clamps_each_view_then_averages():
    """The launched `mirror_plus --IS_on_t` (= ppots_released+mirror_released_plus) clamps each view's sequence
    loss at 10 and then averages the active views; mirror_released_plus alone clamps each view too. Hand-built
    views: one far above 10, one below, so clamp-then-average and average-then-clamp differ."""
    batch = synthetic_batch(4)
    ce_of = {0: 30.0, 1: 2.0}  # per masked token: view 0's loss is far above 10, view 1's below
    for spec in ("mirror_released_plus", {"preset": "ppots_released+mirror_released_plus",
                                          "t_sampler": {"density": "flat"}}):
        obj = MDMObjective(spec, MASK_ID)
        draws = obj.draw(batch, seed=0, step=0)
        draws.t[:] = 0.5  # both views active on every row
        draws.active[:] = True
        draws.token_weight = torch.ones_like(draws.token_weight, dtype=torch.float32)
        draws.masked[1] = draws.eligible & ~draws.masked[0]

        def token_ce(noised, attention, clean, masked):  # rows: view 0 of every sequence, then view 1
            assert len(masked) == 2 * batch.size
            view = (torch.arange(len(masked)) >= batch.size).long()
            return masked.float() * torch.tensor([ce_of[0], ce_of[1]])[view][:, None]

        out = obj.loss(token_ce, batch, draws)
        n_e = draws.eligible.sum(1).float()
        views = torch.stack([ce_of[v] * draws.masked[v].sum(1) / n_e for v in (0, 1)])
        expected = views.clamp(max=10).mean(0)
        assert torch.allclose(out.row_losses, expected), (out.row_losses, expected)
        assert not torch.allclose(expected, views.mean(0).clamp(max=10))  # the other order really differs


@pytest.mark.numerics
def test_ppots_with_a_flat_density_is_standard_bit_for_bit():
    batch = synthetic_batch(8)
    for step in range(5):
        a = objective("standard")(table_ce(TABLE), batch, seed=5, step=step)
        b = MDMObjective({"preset": "ppots", "t_sampler": {"density": "flat"}}, MASK_ID)(
            table_ce(TABLE), batch, seed=5, step=step)
        assert torch.equal(a.t, b.t) and torch.equal(a.loss, b.loss) and torch.all(b.seq_weight == 1)


def test_ppots_samples_its_density_and_weights_by_its_inverse():
    density = GridDensity.load(SKEWED)
    sampler = Method.build({"preset": "ppots", "t_sampler": {"density": SKEWED}}).t_sampler
    t, w = sampler.sample(20000, generator(0))

    def cdf(x):
        return float(torch.trapezoid(density(torch.linspace(0, x, 400, dtype=torch.float64)),
                                     torch.linspace(0, x, 400, dtype=torch.float64)))

    assert stats.kstest(t.numpy(), lambda xs: np.array([cdf(x) for x in xs])).pvalue > 1e-3
    assert torch.allclose(w, 1 / density(t))
    # the density is normalised and the weights average to one under p (E_p[1/p] = 1)
    grid = torch.linspace(0, 1, 5001, dtype=torch.float64)
    assert float(torch.trapezoid(density(grid), grid)) == pytest.approx(1.0, abs=1e-9)
    assert w.mean().item() == pytest.approx(1.0, abs=4 * w.std().item() / math.sqrt(len(w)))


def test_ppots_grid_is_extended_to_cover_zero_and_one():
    d = GridDensity.load(SKEWED)
    assert d.t[0] == 0 and d.t[-1] == 1 and torch.all(d(torch.tensor([0.0, 1.0], dtype=torch.float64)) > 0)


def test_mirror_views():
    batch = synthetic_batch(16, length=64)
    obj = objective("mirror")
    for step in range(40):
        d = obj.draw(batch, seed=0, step=step)
        v1, v2 = d.masked
        p = (1 - EPS) * d.t + EPS
        for r in range(batch.size):
            if p[r] <= 0.5:
                assert not (v1[r] & v2[r]).any()
            else:
                assert torch.equal(v1[r] | v2[r], d.eligible[r])  # union coverage min(1, 2p) = 1
    # each view's marginal mask rate is p: regress the masked fraction on p
    fracs, ps = [[], []], []
    for step in range(300):
        d = obj.draw(batch, seed=1, step=step)
        n = d.eligible.sum(1)
        for v in range(2):
            fracs[v].append(d.masked[v].sum(1) / n)
        ps.append((1 - EPS) * d.t + EPS)
    ps = torch.cat(ps)
    for v in range(2):
        resid = torch.cat(fracs[v]) - ps
        assert abs(resid.mean().item()) < 4 * resid.std().item() / math.sqrt(len(resid))


def test_mirror_union_coverage_is_2p_below_one_half():
    batch = synthetic_batch(32, length=64)
    obj = objective("mirror")
    resid = []
    for step in range(200):
        d = obj.draw(batch, seed=2, step=step)
        p = (1 - EPS) * d.t + EPS
        cover = (d.masked[0] | d.masked[1]).sum(1) / d.eligible.sum(1)
        resid.append(cover - torch.clamp(2 * p, max=1))
    resid = torch.cat(resid)
    assert abs(resid.mean().item()) < 4 * resid.std().item() / math.sqrt(len(resid))


def test_strats_exact_counts_per_stratum_and_uniform_marginal():
    sampler = Method.build("strats").t_sampler
    n, k = 32, round(math.sqrt(32))
    pooled = []
    for s in range(300):
        t, w = sampler.sample(n, generator(s))
        counts = torch.bincount((t * k).floor().long(), minlength=k)
        assert sorted(counts.tolist()) == [n // k] * (k - n % k) + [n // k + 1] * (n % k)
        assert torch.all(w == 1)
        pooled.append(t)
    assert stats.kstest(torch.cat(pooled).numpy(), "uniform").pvalue > 1e-3
    custom = Stratified(Stratified.Config(k=4))
    assert torch.bincount((custom.sample(10, generator(0))[0] * 4).floor().long()).tolist() in (
        [3, 3, 2, 2], [3, 2, 3, 2], [3, 2, 2, 3], [2, 3, 3, 2], [2, 3, 2, 3], [2, 2, 3, 3])


def test_strats_stratifies_the_global_batch_not_the_micro_batch():
    """Two micro-batches of one global batch together hold exactly the strata counts of the global batch."""
    batch = synthetic_batch(12)
    obj = objective("strats")
    halves = [batch.select(slice(0, 6)), batch.select(slice(6, 12))]
    t = torch.cat([obj.draw(h, seed=0, step=3, global_batch_size=12).t for h in halves])
    whole = obj.draw(batch, seed=0, step=3, global_batch_size=12).t
    assert torch.equal(t, whole)
    assert sorted(torch.bincount((t * 3).floor().long(), minlength=3).tolist()) == [4, 4, 4]


def test_lattice_is_evenly_spaced():
    t, _ = Method.build("lattice").t_sampler.sample(8, generator(1))
    gaps = torch.diff(torch.sort(t).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 8))


def test_exact_count_masks_a_fixed_count():
    batch = synthetic_batch(8, length=40)
    obj = objective("exact_count")
    for step in range(20):
        d = obj.draw(batch, seed=0, step=step)
        target = ((1 - EPS) * d.t + EPS) * d.eligible.sum(1)
        count = d.masked[0].sum(1)
        assert torch.all((count == target.floor()) | (count == target.ceil()))


def test_isad_raises_delimiter_rates_and_reweights():
    batch = synthetic_batch(8, length=40)
    obj = objective({"preset": "isad", "rate": {"delta": 0.3}})
    d = obj.draw(batch, seed=0, step=0)
    p = (1 - EPS) * d.t + EPS
    delim = batch.delimiter_mask & d.eligible
    q = 1 / d.token_weight
    assert torch.allclose(q[delim], torch.clamp(p[:, None] + 0.3, max=1).expand_as(q)[delim])
    assert torch.allclose(q[~delim & d.eligible], p[:, None].expand_as(q)[~delim & d.eligible])


def test_syrm_masks_and_predicts_prompt_syntax_tokens():
    batch = synthetic_batch(6, length=40)
    obj = objective("syrm")
    d = obj.draw(batch, seed=0, step=0)
    syntax = batch.syntax_mask & (torch.arange(40)[None] < batch.prompt_lengths[:, None])
    assert torch.equal(d.eligible.sum(1), batch.response_mask().sum(1) + syntax.sum(1))  # |E| counts them
    seen = {}

    def spy(noised, attention_mask, targets, masked):
        seen["noised"], seen["masked"] = noised, masked
        return table_ce(TABLE)(noised, attention_mask, targets, masked)

    d.masked[0] = d.eligible  # mask everything eligible
    obj.loss(spy, batch, d)
    assert torch.all(seen["noised"][syntax] == MASK_ID)  # really masked in x_t ...
    assert torch.all(seen["masked"][syntax])  # ... and predicted (carry CE)


@pytest.mark.numerics
def test_ema_control_variate_changes_the_loss_not_the_gradient():
    batch = synthetic_batch(8)
    weights = torch.nn.Parameter(torch.ones(64, 24))

    def ce(noised, attention_mask, targets, masked):
        pos = torch.arange(targets.shape[1])[None].expand_as(targets)
        return torch.where(masked, weights[targets, pos] * TABLE[targets, pos], torch.zeros(()))

    std, ema = objective("standard"), objective({"preset": "ema", "control_variate": {"eta": 0.2, "bins": 4}})
    for step in range(30):  # warm the control variate up
        ema(ce, batch, seed=0, step=step)
    differs = 0
    for step in range(30, 35):
        grads = []
        for obj in (std, ema):
            weights.grad = None
            out = obj(ce, batch, seed=0, step=step)
            out.loss.backward()
            grads.append((out.loss.item(), weights.grad.clone()))
        assert torch.equal(grads[0][1], grads[1][1])
        differs += grads[0][0] != grads[1][0]
    assert differs == 5  # the control variate is active: the loss value moves


@pytest.mark.numerics
def test_arm_loss_is_next_token_ce_on_the_response():
    batch = synthetic_batch(3, length=10)
    logits = torch.randn(3, 10, 64)
    out = ARMObjective()(lambda input_ids, attention_mask: logits, batch)
    expected = []
    for r in range(3):
        L, P = int(batch.attention_mask[r].sum()), int(batch.prompt_lengths[r])
        ces = [torch.nn.functional.cross_entropy(logits[r, i - 1], batch.input_ids[r, i]).item() for i in range(P, L)]
        expected.append(sum(ces) / (L - P))
    assert out.loss.item() == approx(sum(expected) / 3)  # another summation order: float32 tolerance


def test_randomness_does_not_depend_on_batch_layout_or_padding():
    batch = synthetic_batch(6, length=30)
    obj = objective("mirror")
    whole = obj.draw(batch, seed=4, step=2)
    part = batch.select(slice(3, 6))
    padded = MDMBatch(torch.nn.functional.pad(part.input_ids, (0, 7)),
                      torch.nn.functional.pad(part.attention_mask, (0, 7)), part.prompt_lengths, part.positions)
    d = obj.draw(padded, seed=4, step=2, global_batch_size=6)
    assert torch.equal(d.masked[:, :, :30], whole.masked[:, 3:6]) and not d.masked[:, :, 30:].any()
    assert not torch.equal(obj.draw(batch, seed=5, step=2).masked, whole.masked)
