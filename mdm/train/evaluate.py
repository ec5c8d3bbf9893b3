"""Held-out loss after training: MDM negative ELBO on a fixed t grid with fixed masks, or ARM NLL.

MDM: for t_j = (j + 1/2) / K, j < K, every held-out sequence gets one Bernoulli(p_j) mask keyed by
(eval seed, j, example index); loss = mean over sequences and grid points of (1/|E|) sum_masked CE / p
(a midpoint quadrature of the uniform-t objective, per response token). The same grid and masks for every
run, so methods are compared on the same draws. ARM: next-token NLL per response token (same scale).

Inside a launch (`accelerator` given) every rank takes every world-th batch of the wrapped model and runs under
the accelerator's autocast; the sums are reduced over ranks. Masks are keyed by example index, so the result is the
one-process value up to the order of the float sums. Every rank runs the same number of forwards (a short rank
repeats a batch with weight 0): FSDP and ZeRO-3 gather parameters in each forward, on all ranks together.
"""

from __future__ import annotations

import contextlib

import torch

from mdm.adapters import checked
from mdm.adapters.core import batches, shard
from mdm.data import Collator
from mdm.objective import ARMObjective
from mdm.objective.objective import EPS, model_token_ce
from mdm.objective.rng import generator


@torch.no_grad()
def heldout_loss(model, tokenizer, items: list[dict], task, max_length: int, *, family: str,
                 mask_token_id: int | None, t_grid: int = 8, batch_size: int = 32, seed: int = 0,
                 device="cpu", accelerator=None) -> float:
    if not items:
        return float("nan")
    was_training = model.training
    model.eval()
    collate = Collator(tokenizer, task, max_length)
    padded = checked(model, causal=family == "arm").can_pad  # unpadded: batches of one length (no loss on pads)
    todo = batches([len(it["input_ids"]) for it in items], batch_size, padded)
    if accelerator is not None:
        todo = [(idx, float(keep)) for idx, keep in shard(todo, accelerator.process_index, accelerator.num_processes)]
        autocast = accelerator.autocast()
    else:
        todo, autocast = [(idx, 1.0) for idx in todo], contextlib.nullcontext()
    try:
        with autocast:
            total, count = _sums(model, collate, items, todo, family, mask_token_id, t_grid, seed, device)
    finally:
        model.train(was_training)
    if accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, count], dtype=torch.float64, device=accelerator.device),
                                  reduction="sum")
        total, count = float(sums[0]), float(sums[1])
    return total / count


def _sums(model, collate, items, todo, family, mask_token_id, t_grid, seed, device) -> tuple[float, float]:
    """Weighted sums of per-sequence losses and of sequences over the (index batch, weight) list `todo`."""
    total, count = 0.0, 0.0
    for idx, weight in todo:
        batch = collate([items[i] for i in idx]).to(device)
        rows = torch.tensor(idx)
        if family == "arm":
            out = ARMObjective()(model, batch)
            total += weight * float(out.row_losses.float().sum())
            count += weight * batch.size
            continue
        token_ce = model_token_ce(model)
        eligible = batch.response_mask()
        n_elig = eligible.sum(1).clamp(min=1).float()
        lengths = batch.attention_mask.sum(1).tolist()
        for j in range(t_grid):
            t = (j + 0.5) / t_grid
            p = (1 - EPS) * t + EPS
            u = torch.ones(batch.input_ids.shape, dtype=torch.float32)
            for i, (r, n) in enumerate(zip(rows.tolist(), lengths)):
                u[i, :n] = torch.rand(n, generator=generator(seed, "heldout", j, r))
            u = u.to(device)
            masked = (u < p) & eligible
            noised = torch.where(masked, torch.full_like(batch.input_ids, mask_token_id), batch.input_ids)
            ce = token_ce(noised, batch.attention_mask, batch.input_ids, masked).float()
            total += weight * float((ce.sum(1) / p / n_elig).sum())
            count += weight * batch.size
    return total, count
