"""Held-out likelihood: a deterministic MDM ELBO (fixed t-grid, fixed masks), ARM NLL, and LLaDA's Monte Carlo
conditional log-likelihood (used by the lm-eval plugin).

MDM ELBO on held-out data (`heldout_elbo`). For a sequence x with response tokens E (the eligible set of the
standard objective: response + EOS, never the prompt),

    -log p(x_E | prompt) <= int_0^1 (1/t) E_{M ~ Bernoulli(t)^E} [ sum_{i in M} -log p_theta(x_i | x_t) ] dt.

The integral is evaluated by the midpoint rule on a fixed grid t_k = (k + 1/2) / K, k = 0..K-1, and the masks are
fixed: token i of a sequence gets one uniform u_i (per mask replicate j) from a generator keyed by (seed, the
sequence's token ids, j), and is masked at t_k iff u_i < t_k, so the masks of one sequence are nested across the
grid (common random numbers) and identical for every model, method and training seed evaluated with the same
eval seed. The estimate is then a deterministic function of the model and the data: differences between runs are
differences between models, not Monte Carlo noise. It is a quadrature estimate (the grid and mask draws bias it the
same way for every model), reported per token:

    nll_per_token        = sum_x bound(x) / sum_x |E_x|          (micro; compare with ARM NLL per token)
    nll_per_token_macro  = mean_x bound(x) / |E_x|               (the training loss's normalisation)

ARM runs (`arm_nll`) report the exact next-token NLL on the same response tokens with the same two averages.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mdm.adapters import checked
from mdm.adapters.core import batches
from mdm.objective.rng import derive_seed


def _logits(model, input_ids, attention_mask, causal: bool = False):
    return checked(model, causal).logits(model, input_ids, attention_mask)


def _content_key(ids: Sequence[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


def t_grid(k: int) -> list[float]:
    """Midpoints of K equal bins of [0, 1]."""
    return [(i + 0.5) / k for i in range(k)]


def _items(examples):
    """Accept tokenized examples ({input_ids, prompt_length}) from mdm.data.tokenize_examples."""
    items = []
    for ex in examples:
        ids = [int(i) for i in ex["input_ids"]]
        p0 = int(ex["prompt_length"])
        if not 0 <= p0 < len(ids):
            raise ValueError(f"example {ex.get('id')!r}: prompt_length {p0} leaves no response token")
        items.append((ids, p0))
    return items


@torch.no_grad()
def heldout_elbo(
    model,
    examples,
    mask_token_id: int,
    *,
    grid: int = 16,
    masks_per_t: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    device=None,
    pad_token_id: int = 0,
) -> dict:
    """Deterministic MDM ELBO (module docstring). `examples`: tokenized items {input_ids, prompt_length}.
    Returns the averages, the per-sequence bounds (nats) and the estimator's settings."""
    if grid < 1 or masks_per_t < 1:
        raise ValueError("grid and masks_per_t must be >= 1")
    items = _items(examples)
    device = device or next(model.parameters()).device
    ts = t_grid(grid)
    model.eval()
    # one row per (sequence, replicate, t); rows with no masked token contribute 0 and are skipped
    rows = []
    for s, (ids, p0) in enumerate(items):
        n = len(ids) - p0
        for j in range(masks_per_t):
            g = torch.Generator().manual_seed(derive_seed("heldout-elbo", seed, _content_key(ids), j))
            u = torch.rand(n, generator=g, dtype=torch.float64)
            for t in ts:
                m = (u < t).nonzero().flatten() + p0
                if m.numel():
                    rows.append((s, t, m))
    bound = [0.0] * len(items)
    padded = checked(model).can_pad
    for idx in batches([len(items[s][0]) for s, _, _ in rows], batch_size, padded):
        chunk = [rows[i] for i in idx]
        width = max(len(items[s][0]) for s, _, _ in chunk)
        x = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        target = torch.zeros((len(chunk), width), dtype=torch.long)
        masked = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, (s, _, m) in enumerate(chunk):
            ids = torch.tensor(items[s][0])
            x[r, : len(ids)] = ids
            target[r, : len(ids)] = ids
            attn[r, : len(ids)] = 1
            masked[r, m] = True
        x = torch.where(masked, torch.full_like(x, int(mask_token_id)), x)
        logits = _logits(model, x.to(device), attn.to(device))
        ce = torch.zeros(masked.shape, dtype=torch.float64)
        ce[masked] = F.cross_entropy(logits[masked.to(logits.device)].float(), target[masked].to(logits.device),
                                     reduction="none").double().cpu()  # fmt: skip
        per_row = ce.sum(1)
        for r, (s, t, _) in enumerate(chunk):
            bound[s] += float(per_row[r]) / t / (grid * masks_per_t)
    n_tokens = [len(ids) - p0 for ids, p0 in items]
    return _summary("mdm_elbo", bound, n_tokens) | {
        "estimator": "midpoint t-grid, nested Bernoulli masks fixed by (seed, sequence)",
        "t_grid": grid,
        "masks_per_t": masks_per_t,
        "seed": seed,
        "forward_rows": len(rows),
    }


@torch.no_grad()
def arm_nll(model, examples, *, batch_size: int = 16, device=None, pad_token_id: int = 0) -> dict:
    """Exact next-token NLL of the response tokens (token i predicted from positions < i)."""
    items = _items(examples)
    device = device or next(model.parameters()).device
    model.eval()
    nll = [0.0] * len(items)
    for idx in batches([len(ids) for ids, _ in items], batch_size, checked(model, causal=True).can_pad):
        chunk = [items[i] for i in idx]
        width = max(len(ids) for ids, _ in chunk)
        x = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, (ids, p0) in enumerate(chunk):
            x[r, : len(ids)] = torch.tensor(ids)
            attn[r, : len(ids)] = 1
            scored[r, p0 : len(ids)] = True
        logits = _logits(model, x.to(device), attn.to(device), causal=True)[:, :-1]
        pred = scored[:, 1:]
        ce = torch.zeros(pred.shape, dtype=torch.float64)
        ce[pred] = F.cross_entropy(logits[pred.to(logits.device)].float(), x[:, 1:][pred].to(logits.device),
                                   reduction="none").double().cpu()  # fmt: skip
        for r, i in enumerate(idx):
            nll[i] = float(ce[r].sum())
    return _summary("arm_nll", nll, [len(ids) - p0 for ids, p0 in items])


def _summary(metric: str, per_seq: list[float], n_tokens: list[int]) -> dict:
    total = sum(n_tokens)
    micro = sum(per_seq) / total if total else float("nan")
    macro = sum(b / n for b, n in zip(per_seq, n_tokens)) / len(per_seq) if per_seq else float("nan")
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
    for _ in range(n):
        masked = seq == mask_token_id
        logits = _logits(model, seq, torch.ones_like(seq))[masked]
        x0 = logits.argmax(-1)
        conf = torch.softmax(logits.float(), -1).gather(-1, x0[:, None])[:, 0]
        order = conf.argsort(descending=True)
        x0[order[1:]] = int(mask_token_id)
        seq[masked] = x0
    return bool((seq[0, p:].cpu() == torch.tensor(list(target))).all())
