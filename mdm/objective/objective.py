"""The MDM SFT objective (METHODS.md section 1) with pluggable variance reducers, and the ARM loss.

    objective = MDMObjective(Method.build("ppots+mirror"), mask_token_id=tok.mask_token_id)
    out = objective(model, batch, seed=42, step=0, global_batch_size=32)
    out.loss.backward()

Per sequence: l = (1/|E|) sum_{i masked} w_i CE_i with w_i = 1/q_i (1/p for Standard), averaged over the
method's views; the batch loss is the mean over rows of (sequence weight * l - control-variate offset).
Rows with no eligible or no masked token contribute 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mdm.adapters import checked
from mdm.objective.batch import MDMBatch
from mdm.objective.components.masks import RowUniforms
from mdm.objective.method import Method
from mdm.objective.rng import generator

EPS = 1e-3

# (noised ids [N, L], attention mask [N, L], targets [N, L], masked [N, L]) -> CE [N, L], 0 where unmasked
TokenCE = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def logits_of(model, input_ids, attention_mask, causal: bool = False) -> torch.Tensor:
    """One forward, the padding shown the way this model honours it (`mdm.adapters`: probed once per model)."""
    return checked(model, causal).logits(model, input_ids, attention_mask)


def model_token_ce(model) -> TokenCE:
    """CE of a bidirectional model at the masked positions (float32 softmax)."""

    def token_ce(noised, attention_mask, targets, masked):
        checked(model).check_first_position(masked)  # a shifted model (Dream) never predicts position 0
        logits = logits_of(model, noised, attention_mask)
        ce = torch.zeros(masked.shape, dtype=torch.float32, device=logits.device)
        ce[masked] = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
        return ce

    return token_ce


@dataclass
class Draws:
    """Everything random about one batch: the same draws give the same loss (used by invariance tests)."""

    t: torch.Tensor  # [B] masking rate
    seq_weight: torch.Tensor  # [B] importance weight of the t-sampler
    eligible: torch.Tensor  # [B, L] bool
    token_weight: torch.Tensor  # [B, L] weight of a masked token's CE (1/q_i)
    masked: torch.Tensor  # [V, B, L] bool
    active: torch.Tensor  # [V, B] bool


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to back-propagate
    row_losses: torch.Tensor  # [B] weighted per-sequence losses before the control variate (detached)
    t: torch.Tensor  # [B]
    seq_weight: torch.Tensor  # [B]
    passes: int  # forward/backward sequence passes spent (views x rows)
    masked_tokens: int


class MDMObjective:
    def __init__(self, method: Method | str | dict, mask_token_id: int, eps: float = EPS):
        if mask_token_id is None or int(mask_token_id) < 0:
            raise ValueError("mask_token_id must come from the tokenizer / model config")
        self.method = Method.build(method)
        self.mask_token_id, self.eps = int(mask_token_id), eps

    def draw(self, batch: MDMBatch, *, seed: int, step: int, global_batch_size: int | None = None) -> Draws:
        """Draw t for the whole global batch (same on every process), then this batch's masks."""
        m = self.method
        n = global_batch_size or int(batch.positions.max()) + 1
        t_all, w_all = m.t_sampler.sample(n, generator(seed, step, "t"))
        rows = batch.positions.cpu()
        device = batch.input_ids.device
        t, seq_weight = t_all[rows].to(device), w_all[rows].to(device)
        p = (1 - self.eps) * t + self.eps
        eligible = m.eligibility.eligible(batch)
        q, token_weight = m.rate.rates(p, batch, eligible)
        lengths = batch.attention_mask.sum(1).tolist()
        gens = [generator(seed, step, "mask", int(r)) for r in rows.tolist()]
        draws = RowUniforms(gens, lengths, batch.input_ids.shape[1], device)
        masked, active = m.mask.views(q, eligible, draws, t)
        return Draws(t, seq_weight, eligible, token_weight, masked, active)

    def loss(self, token_ce: TokenCE, batch: MDMBatch, draws: Draws) -> LossOutput:
        n_views, B, L = draws.masked.shape
        # only rows where a view is active go through the model
        v_idx, b_idx = draws.active.nonzero(as_tuple=True)
        masked = draws.masked[v_idx, b_idx]
        clean = batch.input_ids[b_idx]
        noised = torch.where(masked, torch.full_like(clean, self.mask_token_id), clean)
        ce = token_ce(noised, batch.attention_mask[b_idx], clean, masked)
        n_eligible = draws.eligible.sum(1).to(torch.float32)
        per_view = (ce * draws.token_weight[b_idx].to(ce.dtype)).sum(1) / n_eligible[b_idx].clamp(min=1)
        view_clamp = getattr(self.method.mask, "view_clamp", None)
        if view_clamp is not None:  # the released mirror_plus: each view clamped, then the views averaged
            per_view = torch.clamp(per_view, max=view_clamp)
        view_loss = torch.zeros(n_views, B, dtype=ce.dtype, device=ce.device)
        view_loss = view_loss.index_put((v_idx, b_idx), per_view)
        seq = view_loss.sum(0) / draws.active.sum(0).clamp(min=1)
        clamp = getattr(self.method.t_sampler, "loss_clamp", None)
        if clamp is not None:
            seq = torch.clamp(seq, max=clamp)
        rows = draws.seq_weight.to(seq.dtype) * seq
        offsets = self.method.control_variate.offsets(draws.t, rows.detach())
        return LossOutput(
            loss=(rows - offsets).mean(),
            row_losses=rows.detach(),
            t=draws.t,
            seq_weight=draws.seq_weight,
            passes=int(len(v_idx)),
            masked_tokens=int(masked.sum()),
        )

    def loss_by_view(self, token_ce: TokenCE, batch: MDMBatch, draws: Draws, backward) -> LossOutput:
        """`loss`, one view at a time: each view's forward is followed at once by `backward(part)`, so one view's
        activations are alive at a time (MIRROR's two views: half the activations). The parts' gradients sum to the
        joint loss's: the loss is linear in the views' losses (each row's views are averaged with weights fixed by
        the draws, the control variate's offsets are detached). A view no row uses still runs (one row, weight 0),
        so every micro-batch makes the same number of backward calls (DDP / DeepSpeed counting). The returned loss
        is the joint loss's value, detached. Refused where the views' mean is clamped (the released P-POTS's
        loss_clamp): that loss is not linear in the views."""
        if getattr(self.method.t_sampler, "loss_clamp", None) is not None:
            from mdm.errors import ConfigError  # deferred: only for this refusal

            raise ConfigError("training.separate_views", "this method clamps each row's mean over its views (the "
                              "released P-POTS loss_clamp), so its views cannot be back-propagated one at a time; "
                              "set separate_views false")
        n_views, B, _ = draws.masked.shape
        n_eligible = draws.eligible.sum(1).to(torch.float32).clamp(min=1)
        n_active = draws.active.sum(0).clamp(min=1).to(torch.float32)
        weight = draws.seq_weight.to(torch.float32) / n_active.to(draws.seq_weight.device)
        view_clamp = getattr(self.method.mask, "view_clamp", None)
        view_loss = torch.zeros(n_views, B, dtype=torch.float32, device=batch.input_ids.device)
        passes = masked_tokens = 0
        for v in range(n_views):
            b_idx = draws.active[v].nonzero(as_tuple=True)[0]
            used = len(b_idx) > 0
            if not used:
                b_idx = torch.zeros(1, dtype=torch.long, device=draws.active.device)
            masked = draws.masked[v, b_idx]
            clean = batch.input_ids[b_idx]
            noised = torch.where(masked, torch.full_like(clean, self.mask_token_id), clean)
            ce = token_ce(noised, batch.attention_mask[b_idx], clean, masked)
            per_view = (ce * draws.token_weight[b_idx].to(ce.dtype)).sum(1) / n_eligible[b_idx]
            if view_clamp is not None:
                per_view = torch.clamp(per_view, max=view_clamp)
            part = (weight[b_idx].to(per_view.dtype) * per_view).sum() / B * float(used)
            backward(part)
            if used:
                view_loss[v, b_idx] = per_view.detach()
                passes += len(b_idx)
                masked_tokens += int(masked.sum())
        seq = view_loss.sum(0) / n_active.to(view_loss.device)
        rows = draws.seq_weight.to(seq.dtype) * seq
        offsets = self.method.control_variate.offsets(draws.t, rows)
        return LossOutput(loss=(rows - offsets).mean().detach(), row_losses=rows, t=draws.t,
                          seq_weight=draws.seq_weight, passes=passes, masked_tokens=masked_tokens)

    def __call__(self, model_or_ce, batch: MDMBatch, *, seed: int, step: int,
                 global_batch_size: int | None = None) -> LossOutput:
        token_ce = model_or_ce if _is_token_ce(model_or_ce) else model_token_ce(model_or_ce)
        return self.loss(token_ce, batch, self.draw(batch, seed=seed, step=step, global_batch_size=global_batch_size))


def _is_token_ce(obj) -> bool:
    return callable(obj) and not isinstance(obj, torch.nn.Module)


class ARMObjective:
    """Next-token CE on response tokens, normalised per sequence by |E| (same scale as the MDM loss)."""

    def __call__(self, model, batch: MDMBatch, **_) -> LossOutput:
        logits = logits_of(model, batch.input_ids, batch.attention_mask, causal=True)[:, :-1]
        targets = batch.input_ids[:, 1:]
        eligible = batch.response_mask()
        predicted = eligible[:, 1:]  # token i is predicted from position i - 1
        ce = torch.zeros(predicted.shape, dtype=torch.float32, device=logits.device)
        ce[predicted] = F.cross_entropy(logits[predicted].float(), targets[predicted], reduction="none")
        rows = ce.sum(1) / eligible.sum(1).clamp(min=1).to(torch.float32)
        zeros = torch.zeros(batch.size, dtype=torch.float64)
        return LossOutput(rows.mean(), rows.detach(), zeros, zeros + 1, batch.size, int(predicted.sum()))
