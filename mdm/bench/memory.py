"""Per-GPU training memory of a run for `mdm bench --dry-run`: model states by launch backend, activations, fit.

All sizes are bytes per GPU; N = parameters, W = processes (GPUs). Model states (Rajbhandari et al. 2020, ZeRO,
with the dtypes this trainer really uses: the model is built in fp32 and accelerate's bf16 is autocast, except
under DeepSpeed, which casts the module to bf16 and keeps an fp32 master copy in its optimizer):

  ddp    fp32 weights 4N, their bf16 autocast copies saved for backward 2N, fp32 grads 4N, DDP's gradient
         buckets 4N (gradient_as_bucket_view off, accelerate's default), AdamW m + v 8N          = 22N
  fsdp   (FULL_SHARD) fp32 weight shards 4N/W, fp32 grad shards 4N/W, AdamW m + v 8N/W, plus the units being
         computed, gathered in bf16 with their unsharded bf16 grads: 4 bytes x (root unit: embeddings,
         output layer, final norm + 2 blocks, the current one and the prefetched one)
  zero2  (DeepSpeed ZeRO-2) bf16 weights 2N, bf16 grad partition 2N/W, fp32 master + m + v 12N/W
  single one process (no launch config): as ddp without the buckets                               = 18N

Activations per layer per token, 16-bit (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", eq. 2: 34sbh + 5as^2b for a GPT block), adapted to a LLaMA-style block (RMSNorm, SwiGLU
MLP of width f, grouped-query attention with q width hq = heads x head_dim and k/v width hkv, no dropout) and
SDPA/flash attention, which keeps no s x s tensor:

  attention  norm: its input upcast to fp32 4h + the normalised bf16 input 2h, q/k/v projection input 2h,
             q 2hq + k 2hkv + v 2hkv, attention output 2hq
  MLP        norm 6h (as above) + gate/up input 2h + gate 2f + up 2f + silu(gate) 2f + down input 2f
  per layer  A = 16h + 4hq + 4hkv + 8f bytes per token      (LLaDA-8B: 196,608 = 192 KiB)

The RMSNorm of LLaDA's code (and of transformers' LLaMA) computes in fp32 and autograd keeps that fp32 copy: the
8h a layer holds beyond Korthikanti's count. With activation checkpointing (whole layer) each layer keeps only its
input (2h); in backward one layer is rebuilt at a time (A), which is smaller than the output layer's peak for
LLaMA-size vocabularies. The output layer (mdm.objective.model_token_ce: bf16 logits [T, V], the masked rows
selected [M, V], their fp32 copy, fp32 cross-entropy) peaks in one of two places, T tokens, M of them masked:

  cross-entropy  fp32 log-softmax kept + its gradient + the softmax temporary of its backward, the fp32 and bf16
                 selections: 12V bytes per masked token (+ 12h per token of hidden-size tensors)
  scatter back   the bf16 gradient of the logits 2V per token + the lm-head weight's bf16 gradient 2Vh
                 (+ 14h per token)

Both measured, not only derived: tests/bench/test_memory_measured.py runs the real LLaDA-8B / MMaDA-8B code
through one training step under torch's FakeTensorMode with a memory tracker and requires this arithmetic within
10% (GSM8K and OpenScience lengths, MIRROR on/off, checkpointing on/off, MMaDA t2i).

Tokens per micro-batch T = micro_batch_size x length x views (MIRROR: 2, every row goes through the model twice),
where length is the longest row the task's data holds (mdm.bench.lengths; the collator pads a micro-batch to its
longest row), never more than max_length. M, the masked tokens, is at most T: a micro-batch whose rows all drew t
near 1 (over thousands of micro-batches, one does) masks every eligible token, in every view.
Not counted: the DDP residual stream in fp32 (norm inputs at 4 bytes), allocator fragmentation, CUDA context and
NCCL/ZeRO communication buckets; a run fits when the total is at most FIT_FRACTION of the device's memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mdm.errors import ConfigError

GIB = 2**30
FIT_FRACTION = 0.9  # the rest: CUDA context (~0.5-1 GiB), NCCL buffers, allocator fragmentation
# Device memory as nvidia-smi reports it (MiB) for the SXM parts; spec `hardware.memory_gib` overrides.
GPU_MEMORY_MIB = {"H100": 81559, "H200": 143771, "A100": 81920, "L40S": 46068, "B200": 183359}


@dataclass(frozen=True)
class Arch:
    """A LLaMA-style decoder's shape (biases and q/k norms are left out: < 0.01% of an 8B model)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def block_params(self) -> int:
        h = self.hidden
        return 2 * h * self.q_dim + 2 * h * self.kv_dim + 3 * h * self.intermediate + 2 * h

    @property
    def root_params(self) -> int:
        """Everything outside the blocks: embeddings, output layer (unless tied), final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.root_params

    @property
    def layer_activation_bytes(self) -> int:
        """A: bytes per token that one block keeps for backward (module docstring)."""
        return 16 * self.hidden + 4 * self.q_dim + 4 * self.kv_dim + 8 * self.intermediate

    def output_peak(self, tokens: float, masked: float) -> float:
        """Bytes of the output layer's peak for `tokens` tokens, `masked` of them targets (module docstring)."""
        h, v = self.hidden, self.vocab
        return max(12 * v * masked + 12 * h * tokens, 2 * v * h + 2 * v * tokens + 14 * h * tokens)


def _llama(layers, hidden, heads, kv_heads, intermediate, vocab, head_dim=128, tied=False) -> Arch:
    return Arch(layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, tied)


# Shapes of the paper's models (their config.json; never downloaded here).
KNOWN_ARCH = {
    "GSAI-ML/LLaDA-8B-Instruct": _llama(32, 4096, 32, 32, 12288, 126464),
    "GSAI-ML/LLaDA-8B-Base": _llama(32, 4096, 32, 32, 12288, 126464),
    "Gen-Verse/MMaDA-8B-MixCoT": _llama(32, 4096, 32, 32, 12288, 134656),  # + 8,192 image codes
    "Qwen/Qwen2.5-7B-Instruct": _llama(28, 3584, 28, 4, 18944, 152064),
    "Qwen/Qwen3-8B-Base": _llama(36, 4096, 32, 8, 12288, 151936),
    "meta-llama/Llama-3.1-8B-Instruct": _llama(32, 4096, 32, 8, 14336, 128256),
    # the `small` preset: Qwen3-0.6B's shape (tied embeddings), dllm's A2D conversions of it and the ARM itself
    "dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1": _llama(28, 1024, 16, 8, 3072, 151936, tied=True),
    "dllm-hub/Qwen3-0.6B-diffusion-bd3lm-v0.1": _llama(28, 1024, 16, 8, 3072, 151936, tied=True),
    "Qwen/Qwen3-0.6B": _llama(28, 1024, 16, 8, 3072, 151936, tied=True),
}


def arch_of(model_cfg) -> Arch | None:
    """The shape of a run's model: tiny (from its size), a known hub id, or None."""
    if model_cfg.source == "tiny":
        s = model_cfg.size
        return Arch(s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.num_key_value_heads, s.head_dim,
                    s.intermediate_size, model_cfg.vocab_size, s.tie_word_embeddings)
    return KNOWN_ARCH.get(model_cfg.source)


# ---------------------------------------------------------------- the launch


@dataclass(frozen=True)
class LaunchPlan:
    backend: str  # single | ddp | fsdp | zero2
    processes: int
    path: str = ""

    @property
    def title(self) -> str:
        name = {"single": "one process", "ddp": "DDP", "fsdp": "FSDP full shard", "zero2": "DeepSpeed ZeRO-2"}
        where = f" ({self.path})" if self.path else ""
        return f"{name[self.backend]}{where}, {self.processes} process{'es' * (self.processes > 1)}"


def read_launch(path: str | Path, num_processes: int | None = None) -> LaunchPlan:
    """The backend of an accelerate config file (DDP, FSDP FULL_SHARD or DeepSpeed ZeRO-2)."""
    # deferred: mdm.schema loads pydantic and yaml, only to read a launch file
    from mdm.schema import read_yaml

    where = str(path)
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError(where, "not an accelerate config (expected a mapping)")
    kind = cfg.get("distributed_type", "NO")
    processes = int(num_processes or cfg.get("num_processes") or 1)
    if kind in ("NO", "MULTI_GPU", "MULTI_CPU"):
        return LaunchPlan("ddp" if processes > 1 else "single", processes, where)
    if kind == "FSDP":
        strategy = str((cfg.get("fsdp_config") or {}).get("fsdp_sharding_strategy", "FULL_SHARD"))
        if strategy not in ("FULL_SHARD", "1"):
            raise ConfigError(f"{where}: fsdp_config.fsdp_sharding_strategy",
                              f"the memory estimate knows FULL_SHARD only; got {strategy!r}")
        return LaunchPlan("fsdp", processes, where)
    if kind == "DEEPSPEED":
        stage = (cfg.get("deepspeed_config") or {}).get("zero_stage")
        if stage != 2:
            raise ConfigError(f"{where}: deepspeed_config.zero_stage", f"the memory estimate knows ZeRO-2 only; got {stage!r}")
        return LaunchPlan("zero2", processes, where)
    raise ConfigError(f"{where}: distributed_type", f"unknown {kind!r}; the memory estimate knows NO, MULTI_GPU, "
                      "FSDP, DEEPSPEED")


# ---------------------------------------------------------------- the arithmetic


def model_states(arch: Arch, launch: LaunchPlan) -> list[tuple[str, float]]:
    """(component, bytes per GPU) of weights, gradients and AdamW states (module docstring)."""
    n, w = arch.params, launch.processes
    if launch.backend in ("single", "ddp"):
        rows = [("weights: fp32 + bf16 autocast copies (6 B/param)", 6 * n), ("gradients: fp32 (4 B/param)", 4 * n)]
        if launch.backend == "ddp":
            rows.append(("DDP gradient buckets: fp32 (4 B/param)", 4 * n))
        return rows + [("AdamW m + v: fp32 (8 B/param)", 8 * n)]
    if launch.backend == "fsdp":
        return [("weights: fp32 shards (4 B/param / W)", 4 * n / w),
                ("gathered units: bf16 weights + grads (root + 2 blocks)", 4 * (arch.root_params + 2 * arch.block_params)),
                ("gradients: fp32 shards (4 B/param / W)", 4 * n / w),
                ("AdamW m + v: fp32 shards (8 B/param / W)", 8 * n / w)]
    return [("weights: bf16, replicated (2 B/param)", 2 * n),
            ("gradients: bf16 partition (2 B/param / W)", 2 * n / w),
            ("optimizer: fp32 master + m + v (12 B/param / W)", 12 * n / w)]


def activations(arch: Arch, tokens: int, checkpointing: bool) -> float:
    """Bytes the blocks keep for backward for `tokens` tokens in one micro-batch (checkpointing: layer inputs)."""
    if checkpointing:
        return tokens * arch.layers * 2 * arch.hidden
    return tokens * arch.layers * arch.layer_activation_bytes


def step_peak(arch: Arch, tokens: float, masked: float, checkpointing: bool) -> float:
    """Peak bytes of one micro-batch's forward + backward above the model states: what the blocks keep plus the
    larger of the output layer's peak and (checkpointing) the one block rebuilt in backward."""
    out = arch.output_peak(tokens, masked)
    if checkpointing:
        return activations(arch, tokens, True) + max(out, tokens * arch.layer_activation_bytes)
    return activations(arch, tokens, False) + out


def device_gib(hardware) -> float | None:
    if hardware is None:
        return None
    if getattr(hardware, "memory_gib", None):
        return float(hardware.memory_gib)
    mib = GPU_MEMORY_MIB.get(hardware.name)
    return mib / 1024 if mib else None


@dataclass
class Column:
    """One (task, views) case: the worst micro-batch, `micro_batch` rows padded to `max_length` (the task's longest
    row), every token of every view masked."""

    task: str
    max_length: int
    micro_batch: int
    views: int

    @property
    def tokens(self) -> int:
        return self.max_length * self.micro_batch * self.views

    @property
    def masked(self) -> int:
        return self.tokens

    @property
    def label(self) -> str:
        return f"{self.task} x{self.views}"


def views_of(method_cost: float) -> int:
    """Rows through the model per row of the micro-batch (MIRROR: 2; an expected cost of 1.9 still peaks at 2)."""
    return max(1, math.ceil(method_cost - 1e-9))


def memory_table(arch: Arch, launch: LaunchPlan, columns: list[Column], checkpointing: bool,
                 capacity_gib: float | None, fit_gb: list[float] = ()) -> tuple[list[str], list[str]]:
    """(table lines, warnings) in GiB; the chosen setting's total decides the fit."""
    states = model_states(arch, launch)
    static = sum(b for _, b in states)
    width = max(12, *(len(c.label) + 1 for c in columns))
    head = f"    {'component (GiB per GPU)':<56}" + "".join(f"{c.label:>{width}}" for c in columns)
    lines = [head]

    def row(label, values):
        lines.append(f"    {label:<56}" + "".join(f"{v / GIB:>{width}.1f}" if isinstance(v, float | int) else
                                               f"{v:>{width}}" for v in values))

    for label, b in states:
        row(label, [b] * len(columns))
    out = [arch.output_peak(c.tokens, c.masked) for c in columns]
    with_ckpt = [activations(arch, c.tokens, True) for c in columns]
    without = [activations(arch, c.tokens, False) for c in columns]
    row("activations, checkpointing on (layer inputs)", with_ckpt)
    row("activations, checkpointing off (every layer)", without)
    row("output layer peak: logits + loss (every token a target)", out)
    totals_on = [static + step_peak(arch, c.tokens, c.masked, True) for c in columns]
    totals_off = [static + step_peak(arch, c.tokens, c.masked, False) for c in columns]
    row("total, checkpointing on" + (" (this run)" if checkpointing else ""), totals_on)
    row("total, checkpointing off" + ("" if checkpointing else " (this run)"), totals_off)
    warnings: list[str] = []
    if capacity_gib is not None:
        limit = capacity_gib * GIB * FIT_FRACTION
        chosen = totals_on if checkpointing else totals_off
        row(f"fits {capacity_gib:.1f} GiB (<= {FIT_FRACTION:.0%})?", ["yes" if t <= limit else "NO" for t in chosen])
        bad = [c.label for c, t in zip(columns, chosen) if t > limit]
        if bad:
            warnings.append(f"WARNING: {launch.title} does not fit {capacity_gib:.1f} GiB per GPU for "
                            f"{', '.join(bad)} (worst case {max(chosen) / GIB:.1f} GiB)")
    if fit_gb:  # hardware.fit_gib: the same run on other GPU sizes (e.g. 24 and 80 GB)
        more, notes = fit_rows(columns, totals_on if checkpointing else totals_off, list(fit_gb))
        lines += more
        warnings += notes
    return lines, warnings


def fit_rows(columns: list[Column], totals: list[float], sizes_gb: list[float]) -> tuple[list[str], list[str]]:
    """(table lines, warnings) of the fit on GPUs of `sizes_gb` GB (a "24 GB" card: 24e9 bytes, of which
    FIT_FRACTION is usable), for `hardware.fit_gib`."""
    width = max(12, *(len(c.label) + 1 for c in columns))
    lines, warnings = [], []
    for size in sizes_gb:
        limit = size * 1e9 * FIT_FRACTION
        lines.append(f"    {f'fits a {size:g} GB GPU (<= {FIT_FRACTION:.0%})?':<56}" +
                     "".join(f"{'yes' if t <= limit else 'NO':>{width}}" for t in totals))
        bad = [c.label for c, t in zip(columns, totals) if t > limit]
        if bad:
            warnings.append(f"note: does not fit a {size:g} GB GPU for {', '.join(bad)}")
    return lines, warnings


def checkpoint_bytes(params: float, launch: LaunchPlan) -> float:
    """One full (resumable) checkpoint, all ranks together: model + optimizer states as accelerate saves them.
    DeepSpeed: the bf16 module (2 B/param) + fp32 master, m and v (12); otherwise fp32 weights (4) + m and v (8)."""
    return params * (14 if launch.backend == "zero2" else 12)


def checkpoint_disk(params: float, launch: LaunchPlan, steps: int, every: int | None, keep: int) -> dict:
    """Checkpoints of one run (mdm.train.trainer: one every `every` steps before the last, the newest `keep`
    kept; the next is written before the oldest is removed): bytes each, how many, bytes written, peak disk."""
    size = checkpoint_bytes(params, launch)
    n = (steps - 1) // every if every else 0
    return {"size": size, "count": n, "written": n * size, "peak": min(n, keep + 1) * size}


def snapshot_disk(params: float, launch: LaunchPlan, steps: int, every: int | None, keep: int | None) -> dict:
    """Model-only snapshots of one run (`training.save_model_every`): the weights as the run's module holds them
    (bf16 under DeepSpeed, which loads in bf16; fp32 otherwise), one every `every` steps before the last."""
    size = params * (2 if launch.backend == "zero2" else 4)
    n = (steps - 1) // every if every else 0
    return {"size": size, "count": n, "written": n * size, "peak": min(n, keep + 1 if keep else n) * size}
