"""Token-rate rules: the per-token mask probability q_i and the per-token weight of a masked CE.

Standard: q_i = p for every eligible token, weight 1/p. ISAD raises q on answer delimiters and
weights by 1/q_i, which keeps the loss unbiased (Horvitz-Thompson).
"""

from __future__ import annotations

import torch
from pydantic import Field

from mdm.objective.batch import MDMBatch
from mdm.registry import RATES, Component


class Rate(Component):
    def rates(self, p: torch.Tensor, batch: MDMBatch, eligible: torch.Tensor):
        """p [B] -> (q [B, L] mask probability, weight [B, L] applied to a masked token's CE)."""
        q = p[:, None].expand_as(eligible).clone()
        return q, 1.0 / q


@RATES.register("standard")
class StandardRate(Rate):
    """q_i = p for all eligible tokens."""


@RATES.register("isad")
class ISAD(Rate):
    """ISAD: delimiter tokens masked with q = min(1, p + delta), CE weighted 1/q (targets A)."""

    targets = "A"

    class Config(Rate.Config):
        delta: float = Field(0.2, gt=0.0, lt=1.0)

    def rates(self, p, batch, eligible):
        if batch.delimiter_mask is None:
            raise ValueError("isad needs batch.delimiter_mask (the task's answer delimiters, from the data layer)")
        q = p[:, None].expand_as(eligible).clone()
        boosted = batch.delimiter_mask & eligible
        q = torch.where(boosted, torch.clamp(q + self.config.delta, max=1.0), q)
        return q, self.weight(p[:, None].expand_as(q), q)

    def weight(self, p, q):
        return 1.0 / q


@RATES.register("isad_released")
class ISADReleased(ISAD):
    """Authors' released ISAD: delimiter CE weighted p / q^2 instead of 1 / q (biased)."""

    unbiased = False
    released = True

    def weight(self, p, q):
        return torch.where(q > p, p / q**2, 1.0 / q)
