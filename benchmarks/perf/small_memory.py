"""Measured peak training memory of the `small` preset's worst-case step, against `mdm bench --dry-run`'s estimate.

    python benchmarks/perf/small_memory.py     # ~2 min of CPU (9 min wall on a loaded 2-core box); no GPU, no download

The real architecture (transformers' Qwen3ForCausalLM at Qwen3-0.6B's shape, the A2D adapter's bidirectional
4-D mask) runs one MIRROR step of the preset's micro-batch (4 rows x max_length 640 x 2 views, every token
masked: the output layer's worst case) through the A2D adapter's forward and `mdm.objective.model_token_ce`'s
loss ops (the masked selection written as an index_select of every position: fake tensors have no data for a
boolean mask to select by; with every token masked it is the same copy), with bf16 autocast, activation
checkpointing on and an AdamW step, under torch's FakeTensorMode: nothing is allocated, torch's MemTracker counts
every tensor's bytes. Printed: the measured peak by category and the estimate's total (mdm.bench.memory).
Measured 2026-12-07 (torch 2.13, transformers 5.23, CPU fake tensors): peak 19.14 GiB (parameters 2.22, AdamW
4.44, activations 6.68, temporaries 5.80; the peak falls in the loss, before gradients exist) against the
estimate's 19.19 GiB. Not counted by either: the CUDA context, allocator fragmentation (FIT_FRACTION's margin).
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from mdm.bench import memory

SOURCE = "dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1"
MICRO, LENGTH, VIEWS = 4, 640, 2


def main() -> None:
    import torch.nn.functional as F
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from mdm.adapters.a2d import A2D, config_class

    arch = memory.KNOWN_ARCH[SOURCE]
    base = Qwen3Config(vocab_size=arch.vocab, hidden_size=arch.hidden, intermediate_size=arch.intermediate,
                       num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
                       head_dim=arch.head_dim, tie_word_embeddings=arch.tied, use_cache=False)
    config = config_class("a2d-qwen3", "Qwen3Config")(**base.to_dict() | {"model_type": "a2d-qwen3"})
    config._attn_implementation = "sdpa"
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = Qwen3ForCausalLM(config)
        model.__dict__["_mdm_adapters"] = {False: A2D()}  # the probe needs real numbers; the adapter is what it finds
        A2D().enable_checkpointing(model)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
        rows = MICRO * VIEWS
        ids = torch.randint(0, arch.vocab, (rows, LENGTH))
        attn = torch.ones(rows, LENGTH, dtype=torch.long)
        every = torch.arange(rows * LENGTH)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = A2D().logits(model, ids, attn)
                chosen = logits.flatten(0, 1).index_select(0, every)  # logits[masked] (every token masked)
                ce = F.cross_entropy(chosen.float(), ids.flatten().index_select(0, every), reduction="none")
            ce.sum().backward()
            optimizer.step()
            optimizer.zero_grad()

        step()  # untracked: creates AdamW's states, which the measured (steady-state) step then holds
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker as mt:
            step()
        peak = mt.get_tracker_snapshot("peak")
    total = sum(v for dev in peak.values() for k, v in dev.items() if k == "Total")
    print(f"{SOURCE}: {arch.params / 1e9:.3f}B params; micro-batch {MICRO} x {LENGTH} x {VIEWS} views, bf16 autocast, "
          "checkpointing on, every token masked")
    for cats in peak.values():
        for k, v in cats.items():
            print(f"  measured peak {k:<12} {v / 2**30:7.2f} GiB")
    col = memory.Column("gsm8k", LENGTH, MICRO, VIEWS)
    launch = memory.LaunchPlan("single", 1)
    static = sum(b for _, b in memory.model_states(arch, launch))
    est = static + memory.activations(arch, col.tokens, True) + col.tokens * arch.output_bytes
    print(f"  estimate (mdm bench --preset small --dry-run, gsm8k x2): {est / 2**30:.2f} GiB; measured "
          f"{total / 2**30:.2f} GiB ({total / est:.2f}x)")


if __name__ == "__main__":
    main()
