"""Evaluation over the processes of a launch: every GPU of the node decodes, none idles.

    accelerate launch --config_file benchmarks/accelerate/deepspeed_zero2.yaml -m mdm.cli eval RUN_DIR
    accelerate launch --cpu --num_processes 2 -m mdm.cli eval RUN_DIR      # the same over 2 CPU processes (gloo)

Inside a launch (WORLD_SIZE > 1) each process loads the whole model on its own device (an 8B model in bf16 is
16 GB: it fits one GPU, so no ZeRO / FSDP sharding is involved, whatever the launch config says for training) and
decodes every world-th of the prompt batches one process would decode (`mdm.sampler.generate(shard=...)`): each
prompt meets the same batch neighbours, the same padding and its own keyed random draws, so the per-prompt outputs
are those of one process (greedy: identical, tested through the CLI). The held-out likelihood is sharded the same
way (`heldout_nll(accelerator=...)`). The per-prompt results are gathered to every rank; rank 0 scores them and
writes the record and the samples file, the others write nothing. The processes exit when done, so the memory the
evaluation used is given back before the next training launch (`mdm bench` runs it as its own launched job:
`mdm.bench.runner`).

Outside a launch `ranks()` is the single process (rank 0 of 1) and nothing here changes what it computes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch; `heldout_nll(accelerator=...)` uses it as it uses an Accelerator."""

    rank: int = 0
    world: int = 1
    device: object = None  # torch.device of this rank (None: the caller's default)

    @property
    def process_index(self) -> int:
        return self.rank

    @property
    def num_processes(self) -> int:
        return self.world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world) if self.world > 1 else None

    def autocast(self):
        return contextlib.nullcontext()  # the model is loaded in its evaluation dtype; nothing to cast

    def reduce(self, tensor, reduction: str = "sum"):
        from accelerate.utils import reduce  # deferred: accelerate (slow import), only inside a launch

        return reduce(tensor, reduction=reduction)

    def gather(self, obj) -> list:
        """[rank 0's obj, rank 1's obj, ...] on every rank."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object  # deferred: accelerate (slow import), only inside a launch

        return gather_object([obj])

    def barrier(self) -> None:
        if self.world > 1:
            from accelerate import PartialState  # deferred: accelerate (slow import), only inside a launch

            PartialState().wait_for_everyone()


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def ranks() -> Ranks:
    """The launch's process group (initialised here: gloo on CPU, NCCL on GPUs), or the single process."""
    if not launched():
        return Ranks()
    import torch  # deferred: torch, heavy; only inside a launch
    from accelerate import PartialState  # deferred: accelerate (slow import), only inside a launch

    state = PartialState(cpu=not torch.cuda.is_available())
    return Ranks(state.process_index, state.num_processes, state.device)


def merge_generation(out, rk: Ranks):
    """One GenerationOutput from every rank's share (`generate(shard=...)` leaves the others' tokens None): the
    tokens and steps of each prompt from the rank that decoded it, the forward counts summed."""
    if rk.world == 1:
        return out
    from mdm.sampler import GenerationOutput  # deferred: mdm.sampler imports torch

    parts = rk.gather((out.tokens, out.steps_run, out.forward_passes, out.rows_forwarded, out.token_forwards))
    tokens, steps = [None] * len(out.tokens), [0] * len(out.tokens)
    for toks, st, *_ in parts:
        for i, t in enumerate(toks):
            if t is not None:
                tokens[i], steps[i] = t, st[i]
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise RuntimeError(f"{len(missing)} prompt(s) decoded by no rank (first: {missing[0]})")
    return GenerationOutput(tokens, steps, sum(p[2] for p in parts), sum(p[3] for p in parts),
                            {**out.config, "processes": rk.world}, sum(p[4] for p in parts))
