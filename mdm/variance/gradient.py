"""Gradient-variance mode: per-sample gradients on a parameter subset, exact or randomly projected.

The paper decomposes the variance of the scalar loss; what the optimizer feels is the gradient. Here the
sample of the nested design is the gradient of the method's row loss with respect to the weights of
selected `nn.Linear` modules (e.g. the last transformer block), optionally multiplied by a fixed random
Gaussian projection P [d, D] / sqrt(d) (E||P x||^2 = ||x||^2, so traces of covariances are preserved in
expectation). Every variance term becomes a trace: A = E||gamma - E[gamma | x0, t]||^2 and so on.

Per-sample gradients of a Linear weight are exact and need one batched backward: for the row loss
s_r, dW = sum_l delta_{r,l} x_{r,l}^T with delta = ds/d(output) (rows of a batch do not interact, so
the backward of sum_r s_r gives each row's delta), collected by hooks. Tied weights (e.g. an lm_head
tied to the embeddings) count only their Linear use; biases are left out.
"""

from __future__ import annotations

import re

import torch

from mdm.errors import ConfigError
from mdm.objective.rng import generator

MAX_TABLE_BYTES = 4 << 30


def select_linears(model, params: str) -> list[tuple[str, torch.nn.Linear]]:
    """`last`: the Linear layers of the last transformer block (`...layers.N.`, LLaDA's `...blocks.N.`); `lora`: the LoRA
    factors (A and B) of every adapted layer (a LoRA run's model: mdm.profiling.spec.attach_lora); else a regex on
    names."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if params == "lora":
        pattern = re.compile(r"\.lora_[AB]\.")
        if not any(pattern.search(n) for n, _ in linears):
            raise ConfigError("gradient.params", "'lora' found no LoRA layers in the model; set model.base to "
                              "the model/ folder of a run with training.peft.lora")
    elif params == "last":
        blocks = [(int(x.group(2)), x.group(1)) for n, _ in linears if (x := re.search(r"\b(layers|blocks)\.(\d+)\.", n))]
        if not blocks:
            raise ConfigError("gradient.params", "'last' found no '...layers.N...' or '...blocks.N...' Linear modules; "
                              "give a regex")
        n, kind = max(blocks)
        pattern = re.compile(rf"\b{kind}\.{n}\.")
    else:
        try:
            pattern = re.compile(params)
        except re.error as e:
            raise ConfigError("gradient.params", f"not a valid regex ({e})") from None
    chosen = [(n, m) for n, m in linears if pattern.search(n)]
    if not chosen:
        examples = ", ".join(n for n, _ in linears[:4])
        raise ConfigError("gradient.params", f"no nn.Linear module name matches {params!r} (e.g. {examples})")
    return chosen


class LinearGradients:
    """Context manager: per-forward-row gradients of the selected Linear weights for the next backward.

        with LinearGradients(model, "last", projection=128) as probe:
            loss_sum.backward()
            rows = probe.per_row()   # [n_forward_rows, dim]
    """

    def __init__(self, model, params: str = "last", projection: int = 128, seed: int = 0):
        self.model, self.modules = model, select_linears(model, params)
        self.size = sum(m.weight.numel() for _, m in self.modules)
        self.projection = int(projection)
        self.dim = self.projection or self.size
        self._proj = {}
        if self.projection:
            for name, m in self.modules:
                g = generator(seed, "projection", name)
                p = torch.randn(self.projection, m.weight.numel(), generator=g) / self.projection**0.5
                self._proj[name] = p.to(m.weight.device)
        self._inputs, self._grads, self._hooks, self._flags = {}, {}, [], None

    def check_table(self, rows: int) -> None:
        if rows * self.dim * 8 > MAX_TABLE_BYTES:
            raise ConfigError("gradient.projection", f"{rows} samples x {self.dim} gradient coordinates do not fit "
                              f"in memory; set a projection (e.g. 128) or a smaller parameter subset")

    def __enter__(self):
        self._flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for name, m in self.modules:
            m.weight.requires_grad_(True)
            self._hooks.append(m.register_forward_hook(self._forward_hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for p, flag in self._flags:
            p.requires_grad_(flag)
            p.grad = None
        self._inputs, self._grads = {}, {}

    def _forward_hook(self, name):
        def hook(module, inputs, output):
            self._inputs[name] = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: self._grads.__setitem__(name, g.detach()))

        return hook

    def per_row(self) -> torch.Tensor:
        """[n, dim] float32 per forward row, from the last forward + backward; then forgets them."""
        parts = []
        for name, _ in self.modules:
            x, g = self._inputs.pop(name), self._grads.pop(name)
            dw = torch.einsum("nlo,nli->noi", g.float(), x.float()).reshape(x.shape[0], -1)
            parts.append(dw @ self._proj[name].T if self.projection else dw)
        out = parts[0]
        for p in parts[1:]:
            out = out + p if self.projection else torch.cat([out, p], 1)
        for _, m in self.modules:
            m.weight.grad = None
        return out
