"""Bin-wise EMA control variate on the loss value (METHODS.md section 8).

l_adj = l - c_j b_j with b_j, c_j constants w.r.t. the parameters: the reported loss and its variance
change, the gradient does not. We implement it as defined and test gradient-neutrality.
"""

from __future__ import annotations

import torch
from pydantic import Field

from mdm.registry import CONTROL_VARIATES, Component


class ControlVariate(Component):
    def offsets(self, t: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Per-row constant subtracted from the loss; then the state is updated with `losses`."""
        return torch.zeros_like(losses)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@CONTROL_VARIATES.register("none")
class NoControlVariate(ControlVariate):
    pass


@CONTROL_VARIATES.register("ema")
class BinEMA(ControlVariate):
    """Per t-bin EMA baseline b_j and EMA moments of (l, b) for the optimal coefficient c_j (targets B)."""

    targets = "B"

    class Config(ControlVariate.Config):
        bins: int = Field(10, ge=1)
        eta: float = Field(0.01, gt=0.0, le=1.0)
        optimal: bool = True

    def __init__(self, config):
        super().__init__(config)
        m = config.bins
        self.baseline = torch.zeros(m, dtype=torch.float64)
        self.seen = torch.zeros(m, dtype=torch.bool)
        # EMA of l, b, l*b, b*b per bin
        self.moments = torch.zeros(4, m, dtype=torch.float64)

    def bin_of(self, t: torch.Tensor) -> torch.Tensor:
        return torch.round(t.double().cpu() * (self.config.bins - 1)).long()

    def coefficient(self) -> torch.Tensor:
        if not self.config.optimal:
            return torch.ones_like(self.baseline)
        mean_l, mean_b, mean_lb, mean_bb = self.moments
        return (mean_lb - mean_l * mean_b) / (mean_bb - mean_b**2 + 1e-6)

    def offsets(self, t, losses):
        bins, values = self.bin_of(t), losses.detach().double().cpu()
        c = self.coefficient()
        out = torch.where(self.seen[bins], c[bins] * self.baseline[bins], torch.zeros_like(values))
        eta = self.config.eta
        for j, value in zip(bins.tolist(), values.tolist()):  # sequential: the order is the global batch order
            if not self.seen[j]:
                self.baseline[j], self.seen[j] = value, True
                self.moments[:, j] = torch.tensor([value, value, value * value, value * value])
                continue
            b = self.baseline[j].item()
            update = torch.tensor([value, b, value * b, b * b], dtype=torch.float64)
            self.moments[:, j] = (1 - eta) * self.moments[:, j] + eta * update
            self.baseline[j] = (1 - eta) * b + eta * value
        return out.to(losses.dtype).to(losses.device)

    def state_dict(self):
        return {"baseline": self.baseline.clone(), "seen": self.seen.clone(), "moments": self.moments.clone()}

    def load_state_dict(self, state):
        self.baseline, self.seen, self.moments = (state[k].clone() for k in ("baseline", "seen", "moments"))
