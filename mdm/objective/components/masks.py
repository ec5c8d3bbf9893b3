"""Mask builders: from per-token probabilities q, build the masked set(s) ("views") of each sequence.

Every view is marginally a standard sample (token i masked with probability q_i), so averaging views
keeps the loss unbiased; how the views are coupled is what changes pattern noise A.
"""

from __future__ import annotations

import torch
from pydantic import Field

from mdm.registry import MASKS, Component


class RowUniforms:
    """Per-row U[0,1] fields drawn from per-row generators, in position order, over each row's real length.

    A row's draws depend only on its own key and length, never on batch padding or batch composition.
    """

    def __init__(self, generators: list[torch.Generator], lengths: list[int], width: int, device=None):
        self.generators, self.lengths, self.width, self.device = generators, lengths, width, device

    def field(self) -> torch.Tensor:
        out = torch.ones(len(self.generators), self.width, dtype=torch.float64)
        for row, (gen, n) in enumerate(zip(self.generators, self.lengths)):
            out[row, :n] = torch.rand(n, generator=gen, dtype=torch.float64)
        return out.to(self.device)

    def scalar(self) -> torch.Tensor:
        return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(self.device)


class MaskBuilder(Component):
    cost = 1.0  # forward/backward passes per sequence
    uniform_rate_only = False  # needs q constant over a sequence's eligible tokens

    def views(self, q, eligible, draws: RowUniforms, t):
        """-> masked [V, B, L] bool, active [V, B] bool (a view can be switched off for a row)."""
        u = draws.field()
        masked = (u < q) & eligible
        return masked[None], torch.ones(1, q.shape[0], dtype=torch.bool, device=q.device)


@MASKS.register("bernoulli")
class Bernoulli(MaskBuilder):
    """Standard: each eligible token masked independently with probability q_i."""


@MASKS.register("mirror")
class Mirror(MaskBuilder):
    """MIRROR: one U per token, views U < q and U > 1 - q (disjoint for q <= 0.5; targets A)."""

    targets = "A"
    cost = 2.0

    def views(self, q, eligible, draws, t):
        u = draws.field()
        masked = torch.stack([(u < q) & eligible, (u > 1 - q) & eligible])
        return masked, self.active(t).to(q.device)

    def active(self, t):
        return torch.ones(2, len(t), dtype=torch.bool)


@MASKS.register("mirror_released_plus")
class MirrorReleasedPlus(Mirror):
    """Authors' released 'mirror_plus': the complementary view is used only when t < 0.9, and each view's
    sequence loss is clamped at 10 before the views are averaged (biased where a view's loss exceeds 10; with
    `ppots_released` the combination then matches the launched `mirror_plus --IS_on_t`)."""

    released = True
    unbiased = False
    cost = 1.9  # expected passes under uniform t
    view_clamp = 10.0

    class Config(Mirror.Config):
        gate: float = Field(0.9, gt=0.0, le=1.0)

    def active(self, t):
        return torch.stack([torch.ones_like(t, dtype=torch.bool), t < self.config.gate])


@MASKS.register("multisample")
class MultiSample(MaskBuilder):
    """k independent masks at the same t, averaged (k x cost; the fair peer of MIRROR at k = 2)."""

    targets = "A"

    class Config(MaskBuilder.Config):
        k: int = Field(2, ge=1)

    @property
    def cost(self):
        return float(self.config.k)

    def views(self, q, eligible, draws, t):
        masked = torch.stack([(draws.field() < q) & eligible for _ in range(self.config.k)])
        return masked, torch.ones(self.config.k, q.shape[0], dtype=torch.bool, device=q.device)


@MASKS.register("exact_count")
class ExactCount(MaskBuilder):
    """Mask exactly m eligible tokens, m = p|E| rounded stochastically (LLaDA's eval estimator).

    Stochastic rounding makes every token's inclusion probability exactly p, so the 1/p weight keeps
    the loss unbiased while the count noise of Bernoulli masking disappears (targets A).
    """

    targets = "A"
    uniform_rate_only = True

    def views(self, q, eligible, draws, t):
        u = draws.field().masked_fill(~eligible, float("inf"))
        n_eligible = eligible.sum(1).to(torch.float64)
        p = torch.where(eligible, q, torch.zeros_like(q)).amax(1)
        target = p * n_eligible
        m = torch.floor(target) + (draws.scalar() < target - torch.floor(target)).to(torch.float64)
        ranks = u.argsort(1).argsort(1)
        masked = (ranks < m[:, None]) & eligible
        return masked[None], torch.ones(1, q.shape[0], dtype=torch.bool, device=q.device)
