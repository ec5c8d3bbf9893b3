"""Adaptive P-POTS (the paper's open question 1): refit p(t) during training, unbiased at every step.

The training loop already sees, for every row, its t and its unweighted loss l = row_loss / seq_weight.
Binned by t, these give E[l^2 | t] directly: the full second moment (pattern noise, data noise and mean),
which is the exact Pareto-optimal target of P-POTS (p* proportional to sqrt(E[l^2 | t])), for free: no
pilot, no extra forward pass. Every `refit_every` optimizer steps the EPR family is refitted to
w_j = sqrt(mean of l^2 in bin j) (warm-started from the previous fit) and mixed with the uniform density
(`mix`, default 0.05, which bounds every weight by 1 / mix).

Unbiasedness: the density used to draw a step's t is fixed before the step (refits happen in `end_step`,
after the step's losses), and each row's weight is 1 / p(t) of that same density, so
E[w l | past] = integral of E[l | t] dt for every step, whatever the refits did before.

Distributed: `observe` accumulates this process's rows; `end_step` all-reduces the per-bin sums (3 x bins
numbers) when torch.distributed is initialised, so the statistics and every refit are identical on all
processes, and `state_dict` at a step boundary is the same on every rank (exact resume).

Trainer protocol (duck-typed, so other t-samplers need nothing):
    out = objective(model, batch, seed=..., step=step, global_batch_size=...)
    if hasattr(objective.method.t_sampler, "observe"):
        objective.method.t_sampler.observe(out)          # every micro-batch
    ...optimizer step...
    if hasattr(objective.method.t_sampler, "end_step"):
        objective.method.t_sampler.end_step(step)        # once per optimizer step, on every process
A small periodic pilot can be used instead (or as well): `refit_target(t, w)` with w from
`mdm.variance.fit.pilot_w`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field

from mdm.objective.components.t_samplers import PPOTS, GridDensity
from mdm.registry import T_SAMPLERS
from mdm.variance.epr import FitError, fit_epr


@T_SAMPLERS.register("ppots_adaptive")
class AdaptivePPOTS(PPOTS):
    """P-POTS refitted during training from per-t-bin loss moments; weight 1/p(t) of the density in use."""

    class Config(PPOTS.Config):
        density: Any = "flat"  # the density before the first refit: 'flat' (= Standard) or a fit-ppots JSON
        mix: float = Field(0.05, ge=0.0, lt=1.0, description="uniform mixing of every refit: p <- (1-mix) p + mix")
        bins: int = Field(20, ge=10, description="t bins of the loss statistics")
        refit_every: int = Field(50, ge=1, description="optimizer steps between refits")
        warmup: int = Field(50, ge=0, description="no refit before this many steps")
        decay: float = Field(0.5, ge=0.0, lt=1.0, description="weight kept by older statistics at each refit")
        min_count: int = Field(4, ge=1, description="rows a bin needs to enter the fit")
        restarts: int = Field(4, ge=0, description="random L-BFGS-B restarts per refit, besides the warm start")
        points: int = Field(201, ge=11, description="grid points of the refitted density")

    def __init__(self, config):
        super().__init__(config)
        m = config.bins
        self.stats = torch.zeros(3, m, dtype=torch.float64)  # decayed (count, sum l, sum l^2), global
        self.window = torch.zeros(3, m, dtype=torch.float64)  # since the last refit, global
        self.pending = torch.zeros(3, m, dtype=torch.float64)  # this process, since the last end_step
        self.params: dict[str, float] | None = None
        self.refits, self.last_refit_step = 0, -1
        self.history: list[dict] = []

    # ------------------------------------------------------------------ statistics
    def observe(self, t_or_output, losses: torch.Tensor | None = None) -> None:
        """Record rows: observe(loss_output) or observe(t, unweighted_losses)."""
        if losses is None:
            out = t_or_output
            t, losses = out.t, out.row_losses / out.seq_weight.to(out.row_losses.dtype)
        else:
            t = t_or_output
        t = torch.as_tensor(t).detach().double().cpu().flatten()
        loss = torch.as_tensor(losses).detach().double().cpu().flatten()
        ok = torch.isfinite(loss)
        t, loss = t[ok], loss[ok]
        m = self.config.bins
        bins = torch.clamp((t * m).long(), 0, m - 1)
        for row, values in enumerate((torch.ones_like(loss), loss, loss * loss)):
            self.pending[row].index_add_(0, bins, values)

    def end_step(self, step: int) -> bool:
        """Once per optimizer step on every process: pool the step's statistics, refit when due."""
        pending = _all_reduce(self.pending)
        self.window += pending
        self.pending.zero_()
        due = step + 1 >= max(self.config.warmup, 1) and (step + 1) % self.config.refit_every == 0
        if not due or step == self.last_refit_step:
            return False
        self.stats = self.config.decay * self.stats + self.window
        self.window.zero_()
        self.last_refit_step = step
        count, s1, s2 = self.stats
        m = self.config.bins
        centres = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        keep = count >= self.config.min_count
        if int(keep.sum()) < 10:
            self.history.append({"step": step, "refit": False, "reason": f"only {int(keep.sum())} bins with data"})
            return False
        w = torch.sqrt(torch.clamp(s2[keep] / count[keep], min=0)).numpy()
        return self.refit_target(centres[keep].numpy(), w, step=step)

    def refit_target(self, t, w, step: int | None = None) -> bool:
        """Refit the EPR density to a target w(t) (from training statistics or a periodic pilot)."""
        try:
            fit = fit_epr(t, w, restarts=self.config.restarts, seed=self.refits, init=self.params)
        except FitError as e:
            warnings.warn(f"ppots_adaptive: refit skipped, keeping the current density ({e})", RuntimeWarning,
                          stacklevel=2)
            self.history.append({"step": step, "refit": False, "reason": str(e)})
            return False
        grid = np.linspace(0.0, 1.0, self.config.points)
        p = fit.density(grid)
        p = p / ((p[1:] + p[:-1]) / 2 * np.diff(grid)).sum()
        self._density = GridDensity(grid, (1 - self.config.mix) * p + self.config.mix)
        self.params = fit.params
        self.refits += 1
        self.history.append({"step": step, "refit": True, "kl": fit.kl, "converged": fit.converged})
        return True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        d = self._density
        return {"stats": self.stats.clone(), "window": self.window.clone(), "params": self.params,
                "refits": self.refits, "last_refit_step": self.last_refit_step,
                "density": None if d is None else d.source}

    def load_state_dict(self, state: dict) -> None:
        self.stats, self.window = state["stats"].clone(), state["window"].clone()
        self.pending.zero_()
        self.params, self.refits = state["params"], state["refits"]
        self.last_refit_step = state["last_refit_step"]
        self._density = None if state["density"] is None else GridDensity.load(state["density"])


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x.clone()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    y = x.to(device)
    dist.all_reduce(y)
    return y.cpu()
