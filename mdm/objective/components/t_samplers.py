"""t-samplers: draw the masking rate t (and its importance weight) for every row of a GLOBAL batch.

Two layers: a u-source (`uniform`, `strats`, `lattice`) makes n numbers whose marginal is U[0,1];
a transform maps u to t (identity, `clipped`, `ppots` inverse CDF). `ppots` and `clipped` take a `u`
option, so `ppots+strats` stratifies u before the inverse CDF (METHODS.md section 7).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from mdm.registry import T_SAMPLERS, Component


class TSampler(Component):
    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """t and weight for the n rows of one global batch (float64, on CPU)."""
        u = self.sample_u(n, gen)
        return u, torch.ones_like(u)

    def sample_u(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64)


@T_SAMPLERS.register("uniform")
class Uniform(TSampler):
    """t ~ U[0, 1] independently per sequence (Standard)."""


@T_SAMPLERS.register("strats")
class Stratified(TSampler):
    """StraTS: k equal strata, n // k draws each, the remainder to random strata, then shuffled (targets B)."""

    targets = "B"

    class Config(TSampler.Config):
        k: int | None = Field(None, ge=1, description="number of strata; default round(sqrt(n))")

    def strata_counts(self, n: int, gen: torch.Generator) -> torch.Tensor:
        k = min(self.config.k or max(1, round(math.sqrt(n))), n)
        counts = torch.full((k,), n // k, dtype=torch.long)
        counts[torch.randperm(k, generator=gen)[: n % k]] += 1
        return counts

    def sample_u(self, n: int, gen: torch.Generator) -> torch.Tensor:
        counts = self.strata_counts(n, gen)
        k = len(counts)
        stratum = torch.repeat_interleave(torch.arange(k, dtype=torch.float64), counts)
        u = (stratum + torch.rand(n, generator=gen, dtype=torch.float64)) / k
        return u[torch.randperm(n, generator=gen)]


@T_SAMPLERS.register("lattice")
class Lattice(TSampler):
    """MD4 / MDLM 'antithetic' sampling: t_i = (u + i / n) mod 1 with one shared u (targets B)."""

    targets = "B"

    def sample_u(self, n: int, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(1, generator=gen, dtype=torch.float64)
        return torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)


U_SOURCES = {"uniform": Uniform, "strats": Stratified, "lattice": Lattice}


class UTransform(TSampler):
    """A transform of u; `u` picks the u-source (uniform / strats / lattice)."""

    class Config(TSampler.Config):
        u: Literal["uniform", "strats", "lattice"] = "uniform"
        k: int | None = Field(None, ge=1, description="strata for u=strats")

    def sample_u(self, n: int, gen: torch.Generator) -> torch.Tensor:
        source = U_SOURCES[self.config.u]
        cfg = source.Config(k=self.config.k) if source is Stratified else source.Config()
        return source(cfg).sample_u(n, gen)


@T_SAMPLERS.register("clipped")
class Clipped(UTransform):
    """t ~ U[lo, hi] (dFactory-style clipped schedule). A different objective, hence biased."""

    unbiased = False

    class Config(UTransform.Config):
        lo: float = Field(0.3, ge=0.0, le=1.0)
        hi: float = Field(0.8, ge=0.0, le=1.0)

        @model_validator(mode="after")
        def _ordered(self):
            if self.lo >= self.hi:
                raise ValueError(f"needs lo < hi, got lo={self.lo}, hi={self.hi}")
            return self

    def sample(self, n, gen):
        u = self.sample_u(n, gen)
        return self.config.lo + (self.config.hi - self.config.lo) * u, torch.ones_like(u)


class GridDensity:
    """A positive density on [0, 1], piecewise linear between grid points, normalised.

    A grid that does not reach 0 or 1 (the authors' grid is j / b, j = 1..b-1) is extended with its end
    values, so p > 0 on all of [0, 1] and the 1/p-weighted loss stays unbiased for the uniform-t objective.
    """

    def __init__(self, grid, density):
        t = torch.as_tensor(grid, dtype=torch.float64)
        p = torch.as_tensor(density, dtype=torch.float64)
        if t.ndim != 1 or t.shape != p.shape or len(t) < 2:
            raise ValueError("density grid and values must be 1-D of the same length >= 2")
        if not torch.all(torch.isfinite(p)) or torch.any(p <= 0):
            raise ValueError("density values must be finite and > 0")
        if torch.any(t[1:] <= t[:-1]) or t[0] < 0 or t[-1] > 1:
            raise ValueError("density grid must be strictly increasing inside [0, 1]")
        # what it was built from: rebuilding from this gives the same bits (normalising the normalised values again
        # would not: their sum is 1 only up to the order of a float sum, which differs between CPU kernels)
        self.source = {"grid": t.tolist(), "density": p.tolist()}
        if t[0] > 0:
            t, p = torch.cat([t.new_zeros(1), t]), torch.cat([p[:1], p])
        if t[-1] < 1:
            t, p = torch.cat([t, t.new_ones(1)]), torch.cat([p, p[-1:]])
        seg = (p[1:] + p[:-1]) / 2 * (t[1:] - t[:-1])
        self.t, self.p = t, p / seg.sum()
        self.cdf = torch.cat([t.new_zeros(1), torch.cumsum(seg / seg.sum(), 0)])
        self.flat = bool(torch.all(p == p[0]))

    @classmethod
    def load(cls, source: Any) -> GridDensity:
        """From a JSON file / dict with `grid` and `density`, a callable t -> density, or 'flat'."""
        if isinstance(source, GridDensity):
            return source
        if source == "flat":
            return cls([0.0, 1.0], [1.0, 1.0])
        if callable(source):
            grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
            return cls(grid, torch.as_tensor([float(source(float(x))) for x in grid]))
        if isinstance(source, (str, Path)):
            source = json.loads(Path(source).read_text())
        return cls(source["grid"], source["density"])

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        j = torch.clamp(torch.searchsorted(self.t, t, right=True) - 1, 0, len(self.t) - 2)
        frac = (t - self.t[j]) / (self.t[j + 1] - self.t[j])
        return self.p[j] + frac * (self.p[j + 1] - self.p[j])

    def inverse_cdf(self, u: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the piecewise-quadratic CDF (solve the quadratic inside the segment)."""
        if self.flat:
            return u.clone()
        j = torch.clamp(torch.searchsorted(self.cdf, u, right=True) - 1, 0, len(self.t) - 2)
        h = self.t[j + 1] - self.t[j]
        p0, slope = self.p[j], (self.p[j + 1] - self.p[j]) / h
        need = u - self.cdf[j]  # area to cover inside the segment: p0 x + slope x^2 / 2 = need
        disc = torch.clamp(p0 * p0 + 2 * slope * need, min=0)
        x = 2 * need / (p0 + torch.sqrt(disc))  # the stable root; reduces to need / p0 when slope = 0
        return torch.clamp(self.t[j] + torch.clamp(x, min=0), 0.0, 1.0)


@T_SAMPLERS.register("ppots")
class PPOTS(UTransform):
    """P-POTS: t ~ p(t) by inverse CDF, sequence weight 1/p(t) (unbiased for any p > 0; targets A+B+C).

    `density`: a JSON path or {grid, density} mapping (as written by `mdm fit-ppots`), a callable, 'flat',
    or 'auto' (the trainer fits one from a pilot before training and replaces it).
    """

    targets = "ABC"

    class Config(UTransform.Config):
        density: Any = "auto"
        max_weight: float = Field(1e6, gt=0)
        mix: float = Field(0.0, ge=0.0, lt=1.0, description="uniform mixing: p <- (1 - mix) p + mix")

        @field_validator("density")
        @classmethod
        def _density(cls, v):
            if isinstance(v, (str, Path)) and v not in ("auto", "flat") and not Path(v).is_file():
                raise ValueError(f"no such density file {str(v)!r}; give a JSON path, 'flat' or 'auto'")
            return v

    def __init__(self, config):
        super().__init__(config)
        self._density: GridDensity | None = None

    @property
    def density(self) -> GridDensity:
        if self._density is None:
            if self.config.density == "auto":
                raise ValueError("ppots density is 'auto': fit one first (`mdm fit-ppots`) and pass it")
            d = GridDensity.load(self.config.density)
            if self.config.mix > 0:
                d = GridDensity(d.t, (1 - self.config.mix) * d.p + self.config.mix)
            self._density = d
        return self._density

    def set_density(self, density: GridDensity | Callable | dict | str) -> None:
        self._density = GridDensity.load(density)

    def sample(self, n, gen):
        u = self.sample_u(n, gen)
        d = self.density
        if d.flat:  # a flat density is the uniform sampler, bit for bit
            return u, torch.ones_like(u)
        t = d.inverse_cdf(u)
        return t, torch.clamp(1.0 / d(t), max=self.config.max_weight)


@T_SAMPLERS.register("ppots_released")
class PPOTSReleased(PPOTS):
    """Authors' released P-POTS(+MIRROR) path: t ~ p(t) but NO 1/p weight, sequence loss clamped at 10.

    Biased; offered only to reproduce the released code.
    """

    unbiased = False
    released = True
    loss_clamp = 10.0

    def sample(self, n, gen):
        t, _ = super().sample(n, gen)
        return t, torch.ones_like(t)
