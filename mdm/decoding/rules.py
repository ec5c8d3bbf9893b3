"""The commit rules of `mdm.decoding` (registered by name in `STRATEGIES`).

A rule sees, at one step of one block, the confidence of every position's candidate ([b, n] float64, -inf where the
position is not masked) and returns which positions to commit ([b, n] bool, only masked ones). `calls(k)`: whether
a step whose LLaDA schedule commits k tokens calls the model at all (LLaDA's k = 0 steps commit nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import Field

from mdm.decoding import STRATEGIES
from mdm.objective.rng import derive_seed
from mdm.registry import Component


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # generated ids per prompt (input order), cut after the first EOS (kept)
    steps_run: list[int]  # denoising steps each prompt went through (fewer than `steps` after an early stop;
    # threshold / factor: the steps in which the prompt's block still had a mask, i.e. its model calls alone)
    forward_passes: int = 0  # model calls
    rows_forwarded: int = 0  # sum over model calls of the rows in the call
    config: dict = field(default_factory=dict)
    token_forwards: int = 0  # sum over model calls of rows x forwarded columns (a cached step forwards fewer)


class Rule(Component):
    scheduled = False  # True: the block runs LLaDA's steps_per_block steps; False: until the block has no mask

    def commit(self, conf: torch.Tensor, masked: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError


def _top1(conf, masked):
    """The most confident masked position of each row that has one."""
    top = torch.zeros_like(masked).scatter_(1, conf.argmax(1, keepdim=True), True)
    return top & masked


@STRATEGIES.register("exact")
class Exact(Rule):
    """LLaDA: the k most confident masked positions (k from the schedule); bit for bit the paper's sampler."""

    scheduled = True

    def commit(self, conf, masked, k):
        chosen = conf.topk(k, dim=-1).indices
        return torch.zeros_like(masked).scatter_(1, chosen, True) & masked


@STRATEGIES.register("threshold")
class Threshold(Rule):
    """Every masked position with confidence > threshold, and at least the most confident one (Fast-dLLM)."""

    class Config(Rule.Config):
        threshold: float = Field(0.9, ge=0.0)

    def commit(self, conf, masked, k):
        return ((conf > self.config.threshold) & masked) | _top1(conf, masked)


@STRATEGIES.register("factor")
class Factor(Rule):
    """The n most confident, n the largest with (r + 1) (1 - c_r) <= factor for all ranks r <= n, at least one."""

    class Config(Rule.Config):
        factor: float = Field(1.0, gt=0.0)

    def commit(self, conf, masked, k):
        c, order = conf.sort(dim=1, descending=True)
        ranks = torch.arange(1, c.shape[1] + 1, device=c.device, dtype=c.dtype)
        ok = ((ranks + 1) * (1 - c) <= self.config.factor) & torch.isfinite(c)
        n = ok.int().cumprod(1).sum(1).clamp(min=1)  # leading run of ranks that pass, at least one
        take = ranks[None] <= n[:, None]
        out = torch.zeros_like(masked).scatter_(1, order, take)
        return out & masked


def build(config) -> Rule:
    """The rule of a DecodeConfig."""
    options = {"threshold": {"threshold": config.threshold}, "factor": {"factor": config.factor}}
    return STRATEGIES.build({"name": config.strategy, **options.get(config.strategy, {})}, where="decoding.strategy")


# ---------------------------------------------------------------- candidates

_CHUNK_ELEMENTS = 1 << 25  # float64 work per chunk of rows (256 MB): LLaDA's vocabulary is 126k


def propose(logits: torch.Tensor, config, gens: list[torch.Generator] | None):
    """Candidate token and confidence for every position: [b, n, V] logits -> ([b, n] ids, [b, n] float64).
    Computed in float64 as LLaDA does, a chunk of rows at a time to bound memory."""
    b, n, v = logits.shape
    x0 = torch.empty((b, n), dtype=torch.long, device=logits.device)
    conf = torch.empty((b, n), dtype=torch.float64, device=logits.device)
    rows = max(1, _CHUNK_ELEMENTS // max(n * v, 1))
    for i in range(0, b, rows):
        lg = logits[i : i + rows].to(torch.float64)
        if config.temperature > 0:
            u = torch.stack([torch.rand((n, v), generator=g, dtype=torch.float64, device=g.device)
                             for g in gens[i : i + rows]]).to(lg.device)  # fmt: skip
            # argmax of exp(l) / (-log u)^T (LLaDA's add_gumbel_noise) = argmax of l / T - log(-log u), no overflow
            x0[i : i + rows] = (lg / config.temperature - torch.log(-torch.log(u))).argmax(-1)
        else:
            x0[i : i + rows] = lg.argmax(-1)
        if config.remasking == "low_confidence":  # softmax probability of the candidate, untempered
            conf[i : i + rows] = torch.exp(lg.gather(-1, x0[i : i + rows, :, None])[..., 0] - torch.logsumexp(lg, -1))
    if config.remasking == "random":
        conf = torch.stack([torch.rand((n,), generator=g, dtype=torch.float64, device=g.device) for g in gens])
        conf = conf.to(logits.device)
    return x0, conf


def row_generator(seed: int, key, device) -> torch.Generator:
    dev = torch.device(device)
    g = torch.Generator(device=dev) if dev.type != "cpu" else torch.Generator()
    return g.manual_seed(derive_seed("decode", seed, key))
