"""The pilot: forward passes that fill the nested table l[x0_i, t_j, mask_k] for a method.

Row r = (i * b + j) * c + k of the pilot is clean sequence i at grid value t_j with mask draw k. Its masks
come from the method's own mask builder, token-rate rule and eligibility at the fixed t_j (a fixed-t
t-sampler replaces the method's), keyed by (seed, step 0, row r) like every draw of the objective, so the
table does not depend on how rows are batched and methods share their random numbers (Standard's mask k
is MIRROR's first view). Forward passes only (eval mode, no grad) in batches of at most `token_budget`
tokens (rows x views x padded length), rows sorted by length to keep padding low.

The t-sampler is not run here: it only changes the law of t on the grid and the sample's weight
(`t_law`), which the estimator applies to this table, so methods that differ only in their t-sampler
(Standard, P-POTS, StraTS) share one table and cost one pilot.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from mdm.adapters.core import shard
from mdm.errors import ConfigError
from mdm.objective import ARMObjective, MDMBatch, MDMObjective, Method
from mdm.objective.components.t_samplers import PPOTS, U_SOURCES, Clipped, PPOTSReleased, TSampler
from mdm.objective.objective import model_token_ce
from mdm.progress import progress as bar
from mdm.variance.gradient import LinearGradients


class FixedT(TSampler):
    """Hands out precomputed t values (weight 1) for every row of the pilot's global batch."""

    name = "fixed_grid"

    def __init__(self, t: torch.Tensor, loss_clamp: float | None = None):
        super().__init__(TSampler.Config())
        self.t, self.loss_clamp = t, loss_clamp

    def sample(self, n, gen):
        if n != len(self.t):
            raise ValueError(f"FixedT holds {len(self.t)} rows, asked for {n}")
        return self.t.clone(), torch.ones_like(self.t)


@dataclass
class TLaw:
    """What a t-sampler does on the grid: law q_j of t, weight w_j of the loss, u-source (its loss clamp, if
    any, is applied in the table: see `table_key`)."""

    q: np.ndarray
    w: np.ndarray
    u: str
    k: int | None


def t_law(sampler, t: np.ndarray, pi: np.ndarray) -> TLaw:
    """The grid version of a t-sampler: q_j = pi_j p(t_j) / Z; importance weight pi_j / q_j (clamped)."""
    k = getattr(sampler.config, "k", None)
    if type(sampler) in U_SOURCES.values():
        name = next(n for n, cls in U_SOURCES.items() if type(sampler) is cls)
        return TLaw(pi.copy(), np.ones_like(pi), name, k)
    if isinstance(sampler, Clipped):
        inside = (t >= sampler.config.lo) & (t <= sampler.config.hi)
        if not inside.any():
            raise ConfigError("method.t_sampler", f"no grid value inside [{sampler.config.lo}, {sampler.config.hi}]")
        q = pi * inside
        return TLaw(q / q.sum(), np.ones_like(pi), sampler.config.u, k)
    if isinstance(sampler, PPOTS):
        density = sampler.density(torch.as_tensor(t, dtype=torch.float64)).numpy()
        q = pi * density
        q = q / q.sum()
        if isinstance(sampler, PPOTSReleased):
            w = np.ones_like(pi)
        else:
            w = np.minimum(pi / q, sampler.config.max_weight)
        return TLaw(q, w, sampler.config.u, k)
    raise ConfigError("method.t_sampler", f"the profiler does not know the law of t-sampler {sampler.name!r}")


def table_key(method: Method) -> tuple:
    """Methods with equal keys produce the same unweighted table (they differ only in their t-sampler)."""
    return (repr(method.rate), repr(method.mask), repr(method.eligibility),
            getattr(method.t_sampler, "loss_clamp", None))


def views_of(method: Method) -> int:
    return max(1, math.ceil(method.mask.cost))


def chunks(lengths: np.ndarray, rows_per_x0: int, views: int, token_budget: int):
    """Greedy batches of pilot row ids (sorted by x0 length) with rows x views x width <= token_budget."""
    order = np.argsort(lengths, kind="stable")
    current, width = [], 0
    for i in order:
        L = int(lengths[i])
        if views * L > token_budget:
            raise ConfigError("pilot.token_budget", f"{token_budget} tokens cannot hold one sequence of {L} "
                              f"tokens x {views} views")
        for r in range(i * rows_per_x0, (i + 1) * rows_per_x0):
            if current and (len(current) + 1) * views * max(width, L) > token_budget:
                yield np.array(current)
                current, width = [], 0
            current.append(r)
            width = max(width, L)
    if current:
        yield np.array(current)


def select_rows(x0: MDMBatch, rows: np.ndarray, rows_per_x0: int) -> MDMBatch:
    """Pilot rows as a batch: their clean sequence, trimmed to the longest real length, positions = row ids."""
    idx = torch.as_tensor(rows // rows_per_x0, dtype=torch.long)
    width = int(x0.attention_mask[idx].sum(1).max())

    def take(x):
        return None if x is None else x[idx, :width]

    return MDMBatch(take(x0.input_ids), take(x0.attention_mask), x0.prompt_lengths[idx],
                    torch.as_tensor(rows, dtype=torch.long), take(x0.delimiter_mask), take(x0.syntax_mask))


@dataclass
class PilotRun:
    losses: np.ndarray  # [a, b, c] unweighted row losses l
    grads: np.ndarray | None  # [a, b, c, d] gradients of l, in gradient mode
    forward_rows: int  # sequence forward passes spent
    forward_tokens: int  # real (unpadded) tokens through the model


def bar_of(total: int, progress: bool | str, name: str):
    """A tqdm bar on a terminal, a few plain lines elsewhere (`progress`: False, True or the label)."""
    return bar(total, progress if isinstance(progress, str) else name, enabled=bool(progress), unit="row")


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def run_mdm(model, x0: MDMBatch, method: Method, t: np.ndarray, c: int, *, mask_token_id: int, seed: int,
            token_budget: int, probe: LinearGradients | None = None, progress: bool | str = False,
            accelerator=None) -> PilotRun:
    """Fill l[a, b, c] (and the gradient table with a probe) for the method's masks at each fixed t_j.

    With `accelerator` (loss tables only) the row chunks are sharded over its ranks, run under its autocast and
    summed back: draws are keyed by row id, so every rank ends with the one-process table."""
    a, b = x0.size, len(t)
    n = a * b * c
    row_t = torch.as_tensor(np.repeat(t, c), dtype=torch.float64).repeat(a)
    fixed = FixedT(row_t, getattr(method.t_sampler, "loss_clamp", None))
    objective = MDMObjective(Method.build({"name": method.name, "t_sampler": fixed, "rate": method.rate,
                                           "mask": method.mask, "eligibility": method.eligibility}),
                             mask_token_id=mask_token_id)
    lengths = x0.attention_mask.sum(1).numpy()
    views = views_of(method)
    losses = np.zeros(n)
    grads = None
    if probe is not None:
        probe.check_table(n)
        grads = np.zeros((n, probe.dim), dtype=np.float32)
    device = _device_of(model)
    token_ce = model_token_ce(model)
    was_training = model.training
    model.eval()
    spent_rows = spent_tokens = 0
    todo = [(rows, True) for rows in chunks(lengths, b * c, views, token_budget)]
    if accelerator is not None:
        if probe is not None:
            raise ValueError("a sharded pilot fills loss tables only (the gradient profiler runs in one process)")
        todo = shard([rows for rows, _ in todo], accelerator.process_index, accelerator.num_processes)
    bar = bar_of(n, progress, method.name)
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    try:
        for rows, keep in todo:
            batch = select_rows(x0, rows, b * c).to(device)
            draws = objective.draw(batch, seed=seed, step=0, global_batch_size=n)
            if probe is None:
                with torch.no_grad(), autocast():
                    out = objective.loss(token_ce, batch, draws)
                if not keep:  # a repeat that only keeps this rank in step with the others
                    continue
            else:
                with torch.enable_grad(), probe:
                    out = objective.loss(token_ce, batch, draws)
                    (out.loss * len(rows)).backward()
                    per_forward = probe.per_row()
                _, b_idx = draws.active.nonzero(as_tuple=True)
                per_row = torch.zeros(len(rows), probe.dim, device=per_forward.device)
                per_row.index_add_(0, b_idx.to(per_forward.device), per_forward)
                grads[rows] = per_row.cpu().numpy()
            losses[rows] = out.row_losses.double().cpu().numpy()
            active = draws.active.sum(0).cpu()
            spent_rows += int(active.sum())
            spent_tokens += int((active * batch.attention_mask.sum(1).cpu()).sum())
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    if accelerator is not None:  # each rank filled its rows (the others are 0): sum the tables
        summed = accelerator.reduce(torch.as_tensor(np.append(losses, [spent_rows, spent_tokens]),
                                                    device=accelerator.device), reduction="sum").cpu().numpy()
        losses, spent_rows, spent_tokens = summed[:-2], int(summed[-2]), int(summed[-1])
    shape = (a, b, c)
    return PilotRun(losses.reshape(shape), None if grads is None else grads.reshape(*shape, -1),
                    spent_rows, spent_tokens)


def run_arm(model, x0: MDMBatch, b: int, c: int, *, token_budget: int, probe: LinearGradients | None = None,
            progress: bool | str = False) -> PilotRun:
    """The ARM (causal twin): one loss per x0 (no t, no mask), broadcast over the (t, mask) axes, so the
    same estimator gives A = B = 0 exactly and C."""
    a = x0.size
    lengths = x0.attention_mask.sum(1).numpy()
    losses = np.zeros(a)
    grads = np.zeros((a, probe.dim), dtype=np.float32) if probe is not None else None
    device = _device_of(model)
    objective = ARMObjective()
    was_training = model.training
    model.eval()
    try:
        parts = list(chunks(lengths, 1, 1, token_budget))
        bar = bar_of(a, progress, "arm")
        for rows in parts:
            batch = select_rows(x0, rows, 1).to(device)
            if probe is None:
                with torch.no_grad():
                    out = objective(model, batch)
            else:
                with torch.enable_grad(), probe:
                    out = objective(model, batch)
                    (out.loss * len(rows)).backward()
                    grads[rows] = probe.per_row().cpu().numpy()
            losses[rows] = out.row_losses.double().cpu().numpy()
            bar.update(len(rows))
        bar.close()
    finally:
        model.train(was_training)
    table = np.broadcast_to(losses[:, None, None], (a, b, c)).copy()
    gtable = None if grads is None else np.broadcast_to(grads[:, None, None, :], (a, b, c, grads.shape[1])).copy()
    return PilotRun(table, gtable, a, int(lengths.sum()))
