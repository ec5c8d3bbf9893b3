"""Held-out likelihood: the one held-out MDM loss (a deterministic negative ELBO on a fixed t grid with fixed
masks) and ARM NLL, used by the trainer (`metrics.heldout_loss`) and `mdm eval` (`likelihood`); and LLaDA's Monte
Carlo conditional log-likelihood (used by the lm-eval plugin).

MDM (`heldout_nll`, family "mdm"). For a sequence x with response tokens E (the eligible set of the standard
objective: response + EOS, never the prompt),

    -log p(x_E | prompt) <= int_0^1 (1/t) E_{M ~ Bernoulli(t)^E} [ sum_{i in M} -log p_theta(x_i | x_t) ] dt,

evaluated by the midpoint rule on t_j = (j + 1/2) / K, j < K, with p_j = (1 - eps) t_j + eps. Every sequence gets
one mask per grid point, keyed by (eval seed, j, the sequence's index in the list): the same masks for every model,
method and training seed evaluated on the same list, whatever the batch size, so differences between runs are
differences between models, not Monte Carlo noise. It is a quadrature estimate (the grid and mask draws bias it the
same way for every model). ARM (family "arm"): the exact next-token NLL of the same response tokens.

    nll_per_token_macro  = mean_x bound(x) / |E_x|     (the training loss's normalisation; the trainer's heldout_loss)
    nll_per_token        = sum_x bound(x) / sum_x |E_x|   (micro)

Inside a launch (`accelerator` given) every rank takes every world-th batch of the wrapped model and runs under
the accelerator's autocast; the sums are reduced over ranks (the per-sequence values stay per rank unless
`gather_rows`: then every rank gets all of them, as `mdm eval` inside a launch needs). Every rank
runs the same number of forwards (a short rank repeats a batch with weight 0): FSDP and ZeRO-3 gather parameters in
each forward, on all ranks together.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mdm.adapters import checked
from mdm.adapters.core import batches, shard
from mdm.data import Collator
from mdm.objective import ARMObjective
from mdm.objective.objective import EPS, model_token_ce
from mdm.objective.rng import derive_seed, generator


def _logits(model, input_ids, attention_mask, causal: bool = False):
    return checked(model, causal).logits(model, input_ids, attention_mask)


def _content_key(ids: Sequence[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


@torch.no_grad()
def heldout_nll(model, tokenizer, items: list[dict], task, max_length: int, *, family: str,
                mask_token_id: int | None, t_grid: int = 8, batch_size: int = 32, seed: int = 0,
                device="cpu", accelerator=None, gather_rows: bool = False) -> dict:
    """The held-out loss of tokenized `items` (module docstring): averages, per-sequence bounds (nats) and the
    estimator's settings."""
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
    bound, n_tokens = {}, {}
    try:
        with autocast:
            total, count = _sums(model, collate, items, todo, family, mask_token_id, t_grid, seed, device, bound,
                                 n_tokens)
    finally:
        model.train(was_training)
    if accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, count], dtype=torch.float64, device=accelerator.device),
                                  reduction="sum")
        total, count = float(sums[0]), float(sums[1])
        if gather_rows:
            # deferred: accelerate (slow import), only inside a launch
            from accelerate.utils import gather_object

            for b, n in gather_object([(bound, n_tokens)]):
                bound.update(b)
                n_tokens.update(n)
    rows = sorted(bound)
    out = _summary("arm_nll" if family == "arm" else "mdm_elbo", [bound[r] for r in rows], [n_tokens[r] for r in rows],
                   macro=total / count if count else float("nan"))  # summed in the trainer's order (its heldout_loss)
    return out | ({"estimator": "midpoint t-grid, Bernoulli masks fixed by (seed, grid point, sequence index)",
                   "t_grid": t_grid, "seed": seed} if family != "arm" else {})


def _sums(model, collate, items, todo, family, mask_token_id, t_grid, seed, device, bound, n_tokens):
    """Weighted sums of per-sequence losses and of sequences over the (index batch, weight) list `todo`; the
    per-sequence bounds (nats) of weight-1 batches go into `bound`, their response token counts into `n_tokens`."""
    total, count = 0.0, 0.0
    for idx, weight in todo:
        batch = collate([items[i] for i in idx]).to(device)
        eligible = batch.response_mask()
        n_elig = eligible.sum(1).clamp(min=1).float()
        if weight:
            n_tokens.update(zip(idx, eligible.sum(1).tolist()))
        if family == "arm":
            out = ARMObjective()(model, batch)
            total += weight * float(out.row_losses.float().sum())
            count += weight * batch.size
            if weight:
                bound.update(zip(idx, (out.row_losses.double().cpu() * n_elig.double().cpu()).tolist()))
            continue
        token_ce = model_token_ce(model)
        lengths = batch.attention_mask.sum(1).tolist()
        for j in range(t_grid):
            t = (j + 0.5) / t_grid
            p = (1 - EPS) * t + EPS
            u = torch.ones(batch.input_ids.shape, dtype=torch.float32)
            for i, (r, n) in enumerate(zip(idx, lengths)):
                u[i, :n] = torch.rand(n, generator=generator(seed, "heldout", j, r))
            u = u.to(device)
            masked = (u < p) & eligible
            noised = torch.where(masked, torch.full_like(batch.input_ids, mask_token_id), batch.input_ids)
            ce = token_ce(noised, batch.attention_mask, batch.input_ids, masked).float()
            total += weight * float((ce.sum(1) / p / n_elig).sum())
            count += weight * batch.size
            if weight:
                for r, v in zip(idx, (ce.sum(1).double() / p / t_grid).cpu().tolist()):
                    bound[r] = bound.get(r, 0.0) + v
    return total, count


def _summary(metric: str, per_seq: list[float], n_tokens: list[int], macro: float) -> dict:
    total = sum(n_tokens)
    micro = sum(per_seq) / total if total else float("nan")
    return {
        "metric": metric,
        "nll_per_token": micro,
        "nll_per_token_macro": macro,
        "perplexity": math.exp(micro) if micro == micro and micro < 700 else float("inf"),
        "n_sequences": len(per_seq),
        "n_tokens": total,
        "per_sequence_nll": per_seq,
    }


# ---------------------------------------------------------------- LLaDA's Monte Carlo log-likelihood


@torch.no_grad()
def mc_loglikelihood(
    model,
    prefix: Sequence[int],
    target: Sequence[int],
    mask_token_id: int,
    *,
    mc_num: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    device=None,
) -> float:
    """log p(target | prefix) >= -E_l[(T/l) sum_{masked} CE], the LLaDA way (eval_llada.py): each pass masks
    exactly l of the T target tokens, the counts of a batch are stratified (l = k, k + T/b, ... mod T for a random
    k), positions uniformly at random; the bound is averaged over ceil(mc_num / batch_size) batches.
    Randomness comes from a generator keyed by (seed, prefix, target), so the value is reproducible."""
    prefix, target = [int(i) for i in prefix], [int(i) for i in target]
    n_t = len(target)
    if n_t == 0:
        return 0.0
    device = device or next(model.parameters()).device
    g = torch.Generator().manual_seed(derive_seed("mc-ll", seed, _content_key(prefix), _content_key(target)))
    seq = torch.tensor(prefix + target)
    p = len(prefix)
    losses = []
    remaining = mc_num
    while remaining > 0:
        b = min(batch_size, remaining)
        remaining -= b
        k = int(torch.randint(1, n_t + 1, (), generator=g))
        counts = torch.round(torch.linspace(float(k), k + (b - 1) * (n_t / b), steps=b)).long()
        counts = ((counts - 1) % n_t) + 1
        is_mask = torch.zeros((b, n_t), dtype=torch.bool)
        for r in range(b):
            is_mask[r, torch.randperm(n_t, generator=g)[: int(counts[r])]] = True
        is_mask = torch.cat([torch.zeros((b, p), dtype=torch.bool), is_mask], 1)
        batch = seq[None].repeat(b, 1)
        noisy = torch.where(is_mask, torch.full_like(batch, int(mask_token_id)), batch)
        attn = torch.ones_like(noisy)
        checked(model).check_first_position(is_mask)  # a shifted model needs a non-empty prefix
        logits = _logits(model, noisy.to(device), attn.to(device))
        frac = (counts.double() / n_t)[:, None].expand(b, p + n_t)
        ce = F.cross_entropy(logits[is_mask.to(logits.device)].float(), batch[is_mask].to(logits.device),
                             reduction="none").double().cpu()  # fmt: skip
        losses.append(float((ce / frac[is_mask]).sum()) / b)
    return -sum(losses) / len(losses)


@torch.no_grad()
def suffix_greedy(model, prefix: Sequence[int], target: Sequence[int], mask_token_id: int, device=None) -> bool:
    """LLaDA's `suffix_greedy_prediction`: decode the target span one token per step, most confident first;
    True iff the result equals the target."""
    device = device or next(model.parameters()).device
    p, n = len(prefix), len(target)
    seq = torch.tensor([list(prefix) + [int(mask_token_id)] * n], device=device)
    checked(model).check_first_position(seq == mask_token_id)  # a shifted model needs a non-empty prefix
    for _ in range(n):
        masked = seq == mask_token_id
        logits = _logits(model, seq, torch.ones_like(seq))[masked]
        x0 = logits.argmax(-1)
        conf = torch.softmax(logits.float(), -1).gather(-1, x0[:, None])[:, 0]
        order = conf.argsort(descending=True)
        x0[order[1:]] = int(mask_token_id)
        seq[masked] = x0
    return bool((seq[0, p:].cpu() == torch.tensor(list(target))).all())
