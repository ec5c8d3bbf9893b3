"""Adaptive P-POTS: refits from training statistics, stays unbiased at every step (Monte Carlo)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mdm.variance  # noqa: F401  (registers ppots_adaptive)
from mdm.objective import LossOutput, MDMObjective, Method
from mdm.objective.rng import generator
from mdm.registry import T_SAMPLERS
from tests.helpers import MASK_ID, synthetic_batch, table_ce

TARGET = 2.0  # integral over [0, 1] of f


def f(t):
    return 1 + 3 * t**2


def sigma(t):
    return 0.1 + 8 * (1 - t) ** 6


def optimal_std():
    """Std of w l under the Pareto-optimal p* proportional to sqrt(E[l^2 | t]) (numerical quadrature)."""
    t = np.linspace(0, 1, 100_001)
    root = np.sqrt(f(t) ** 2 + sigma(t) ** 2)
    return math.sqrt(np.trapezoid(root, t) ** 2 - TARGET**2)


def losses(t, step):
    eps = torch.randn(len(t), generator=generator(1, step, "noise"), dtype=torch.float64)
    return f(t) + sigma(t) * eps


def adaptive(**options):
    spec = {"name": "ppots_adaptive", "refit_every": 15, "warmup": 15, "restarts": 1, **options}
    return Method.build({"t_sampler": spec}).t_sampler


def weighted_moments(sampler, n=200_000, seed=9):
    t, w = sampler.sample(n, torch.Generator().manual_seed(seed))
    x = w * losses(t, -seed)
    return x.mean().item(), x.std().item()


def test_adaptive_sampler_is_registered_and_starts_as_standard():
    assert "ppots_adaptive" in T_SAMPLERS.names()
    sampler = adaptive()
    u = torch.rand(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, w = sampler.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(t, u) and torch.all(w == 1)  # flat initial density = the uniform sampler, bit for bit


def test_every_step_stays_unbiased_while_the_density_is_refitted():
    sampler = adaptive()
    per_step, snapshots = [], []
    for step in range(150):
        t, w = sampler.sample(64, generator(0, step, "t"))
        loss = losses(t, step)
        per_step.append((w * loss).mean().item())
        sampler.observe(t, loss)
        if sampler.end_step(step) and sampler.refits in (1, 5):
            snapshots.append(weighted_moments(sampler, seed=sampler.refits))
    assert sampler.refits >= 8
    per_step = np.array(per_step)
    assert abs(per_step.mean() - TARGET) < 4 * per_step.std(ddof=1) / math.sqrt(len(per_step))
    # conditionally on any refit state, E_p[w l] is the uniform-t target
    for mean, std in snapshots:
        assert abs(mean - TARGET) < 4 * std / math.sqrt(200_000)
    # and the refitted density is the useful one: close to the optimum, well below uniform t
    uniform_std, std = weighted_moments(adaptive())[1], weighted_moments(sampler)[1]
    assert std < 1.03 * optimal_std() < 0.9 * uniform_std, (std, optimal_std(), uniform_std)
    # it puts more mass where E[l^2 | t] is large (small t here)
    d = sampler.density
    assert d(torch.tensor([0.05], dtype=torch.float64)) > d(torch.tensor([0.5], dtype=torch.float64))
    # the uniform mixing bounds the weight
    assert d.p.min() >= 0.05 - 1e-12


def test_observing_loss_outputs_uses_the_unweighted_loss_and_state_round_trips():
    sampler = adaptive(refit_every=1, warmup=1, min_count=1, bins=10)
    obj = MDMObjective({"preset": "standard", "t_sampler": sampler}, MASK_ID)
    batch = synthetic_batch(48)
    ce = table_ce(torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) * 3, depends_on_mask=True)
    out = None
    for step in range(3):
        out = obj(ce, batch, seed=0, step=step)
        sampler.observe(out)
        sampler.end_step(step)
    # the statistics hold l = row_loss / seq_weight, not the weighted loss
    fake = LossOutput(out.loss, out.row_losses, out.t, out.seq_weight, 0, 0)
    copy = adaptive(refit_every=1, warmup=1, min_count=1, bins=10)
    copy.observe(fake.t, fake.row_losses / fake.seq_weight)
    probe = adaptive(refit_every=1, warmup=1, min_count=1, bins=10)
    probe.observe(fake)
    assert torch.allclose(copy.pending, probe.pending)
    # a resumed sampler draws exactly what the original draws
    restored = adaptive(refit_every=1, warmup=1, min_count=1, bins=10)
    restored.load_state_dict(sampler.state_dict())
    for a, b in zip(sampler.sample(32, generator(0, 9, "t")), restored.sample(32, generator(0, 9, "t"))):
        assert torch.allclose(a, b)


def test_too_few_populated_bins_keeps_the_current_density():
    sampler = adaptive(refit_every=1, warmup=1)
    sampler.observe(torch.full((50,), 0.5, dtype=torch.float64), torch.ones(50, dtype=torch.float64))
    assert sampler.end_step(0) is False and sampler.refits == 0
    assert "bins with data" in sampler.history[-1]["reason"]


def test_bad_options_are_config_errors():
    from mdm.errors import ConfigError

    with pytest.raises(ConfigError, match="refit_every"):
        Method.build({"t_sampler": {"name": "ppots_adaptive", "refit_every": 0}})
    with pytest.raises(ConfigError, match="bins"):
        Method.build({"t_sampler": {"name": "ppots_adaptive", "bins": 5}})


def test_a_density_rebuilt_from_its_source_is_the_same_bits():
    """Checkpoints keep what a density was built from: rebuilding it gives the same t draws on any CPU kernels
    (normalising the normalised values again is off by the order of a float sum)."""
    import torch

    from mdm.objective.components.t_samplers import GridDensity

    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, 501, dtype=torch.float64)
    for _ in range(20):
        d = GridDensity(grid, torch.rand(501, generator=g, dtype=torch.float64) + 0.1)
        again = GridDensity(**d.source)
        assert torch.equal(again.t, d.t) and torch.equal(again.p, d.p) and torch.equal(again.cdf, d.cdf)
