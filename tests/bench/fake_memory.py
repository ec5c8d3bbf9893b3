"""Measured per-GPU peak of one training micro-step of the paper's real models, without a GPU and without memory.

The real architectures (`../shared/reference/remote_code`: the hub's LLaDA code, MMaDA's copy of it) are built with
their 8B shapes under torch's FakeTensorMode (tensors carry shape, dtype and storage size, no data), in bf16 as
DeepSpeed ZeRO-2 holds the module, and one forward + backward of the SFT loss runs under torch's MemTracker, which
counts the live (fake) storage bytes after every op. Gradients are released as soon as each parameter's gradient is
complete (a post-accumulate hook), as ZeRO-2 does when it reduces a bucket into its partition: the partition itself
(2N/W) and the optimizer's shards are the plan's arithmetic, not measured here.

The loss mirrors `mdm.objective.model_token_ce` op for op (logits, masked selection, fp32 copy, cross-entropy,
scatter into a [N, L] fp32 CE), with the masked positions as an index (a boolean mask has a data-dependent size,
which fake tensors cannot hold; both select a [masked, V] copy).

Speed: a 32-block 8B step takes 2.5-9 min under the tracker on this 2-core machine, so `measure` builds the model
with `layers` blocks and `scaled_peak` extrapolates from 1 and 2 blocks to the real depth: the blocks are identical,
so the peak is affine in their count. Checked (2026-12-07, this machine, LLaDA-8B hub code, 4 x 512 tokens, 2,048
masked): 32 blocks measured 18.395 GiB with checkpointing and 29.903 GiB without; the extrapolation gave 18.395 and
29.903 GiB; and the per-block increment from 1 to 2 blocks equalled that from 2 to 3 in all six test cases.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

REMOTE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "remote_code"

# config.json keys of the real checkpoints (LLaDA-8B-Instruct; MMaDA-8B: + 8,192 image codes)
LLADA_8B = dict(activation_type="silu", alibi=False, attention_dropout=0.0, attention_layer_norm=False,
                block_group_size=1, block_type="llama", d_model=4096, embedding_dropout=0.0, embedding_size=126464,
                vocab_size=126464, flash_attention=False, include_bias=False, include_qkv_bias=False,
                init_device="cpu", init_fn="mitchell", init_std=0.02, input_emb_norm=False, layer_norm_type="rms",
                layer_norm_with_affine=True, max_sequence_length=8192, mlp_hidden_size=12288, mlp_ratio=4,
                n_heads=32, n_kv_heads=32, n_layers=32, residual_dropout=0.0, rms_norm_eps=1e-5, rope=True,
                rope_full_precision=True, rope_theta=500000.0, scale_logits=False, weight_tying=False,
                mask_token_id=126336)
MMADA_8B = {**LLADA_8B, "vocab_size": 134656, "embedding_size": 134656}


def _package(variant: str):
    folder = REMOTE / variant
    name = f"_fake_memory_{variant}"
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{name}.configuration_llada"), importlib.import_module(f"{name}.modeling_llada")


def _token_ce(model, ids, masked_idx, bias):
    """mdm.objective.model_token_ce with the masked positions as an index: the logits die when it returns."""
    logits = model(ids, attention_bias=bias).logits
    n, length = ids.shape
    flat_targets = ids.flatten()
    selected = logits.flatten(0, 1).index_select(0, masked_idx).float()
    ce = torch.zeros(n * length, dtype=torch.float32)
    ce = ce.index_put((masked_idx,), F.cross_entropy(selected, flat_targets.index_select(0, masked_idx),
                                                     reduction="none"))
    return ce.view(n, length)


def measure(model: str, *, layers: int, rows: int, length: int, masked: int, checkpointing: bool) -> dict:
    """Peak bytes of one forward + backward (`rows` x `length` tokens, `masked` of them targets) of `model`
    ("llada-8b": the hub's LLaDA code; "mmada-8b": MMaDA's copy, with MMaDA's 4-D key-padding bias) cut to `layers`
    blocks. Returns {"peak", "params"} in bytes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    variant, shape = {"llada-8b": ("llada_hub", LLADA_8B), "mmada-8b": ("mmada", MMADA_8B)}[model]
    conf, modeling = _package(variant)
    fields = conf.ModelConfig.__dataclass_fields__
    mc = conf.ModelConfig(**{k: v for k, v in {**shape, "n_layers": layers}.items() if k in fields})
    with FakeTensorMode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MemTracker warns about the None outputs of modules
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # DeepSpeed's bf16 module (.to() cannot swap fake parameters)
        try:
            core = modeling.LLaDAModel(mc, init_params=False)
        finally:
            torch.set_default_dtype(default)
        if checkpointing:  # what mdm.adapters.llada turns on
            core.set_activation_checkpointing(conf.ActivationCheckpointingStrategy.whole_layer)
        core.train()
        for p in core.parameters():  # ZeRO-2: a finished gradient goes to its partition (module docstring)
            p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
        ids = torch.randint(0, 126000, (rows, length))
        idx = torch.randperm(rows * length)[:masked]
        bias = torch.ones(rows, 1, 1, length, dtype=torch.bool) if model == "mmada-8b" else None
        tracker = MemTracker()
        tracker.track_external(core)
        with tracker:
            _token_ce(core, ids, idx, bias).sum().backward()
        peak = tracker.get_tracker_snapshot("peak")
        params = sum(p.numel() * p.element_size() for p in core.parameters())
    return {"peak": sum(d["Total"] for d in peak.values()), "params": params}


def scaled_peak(model: str, depth: int = 32, **kw) -> float:
    """The peak of the `depth`-block model from the 1- and 2-block ones (module docstring: affine in the blocks)."""
    one, two = measure(model, layers=1, **kw)["peak"], measure(model, layers=2, **kw)["peak"]
    return one + (depth - 1) * (two - one)
