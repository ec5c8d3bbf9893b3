"""The dry-run's memory arithmetic (mdm.bench.memory.step_peak) against a measured peak: the real LLaDA-8B and
MMaDA-8B code (../shared/reference/remote_code, random init) through one training micro-step under torch's
FakeTensorMode with torch's MemTracker (tests/bench/fake_memory.py: no GPU, no memory, no weights).

Each case requires the estimate within 10% of the measurement, both for the whole peak (bf16 weights + the step)
and for the step's part alone (activations + output layer: the part the plan gets wrong if anything; the weights
are exact arithmetic). Shapes: GSM8K rows are at most ~450 LLaDA tokens (mdm.bench.lengths; 512 here), OpenScience
rows up to max_length 8,192, a text-to-image row 1,539 tokens (512 text + 1,024 image codes + 3 specials).

Measured at 1 and 2 blocks and extrapolated to 32 (tests/bench/fake_memory.py: the peak is affine in the blocks;
checked once at full depth). Budget: 2-5 s a case on one free core (the tracker's per-op bookkeeping), ~20 s for
the file; a full 32-block step would take minutes a case.
"""

from __future__ import annotations

import pytest

from mdm.bench import memory
from tests.bench.fake_memory import REMOTE, scaled_peak
from tests.llada_fixture import requires_mmada_code, requires_remote_code

LLADA = memory.KNOWN_ARCH["GSAI-ML/LLaDA-8B-Instruct"]
MMADA = memory.KNOWN_ARCH["Gen-Verse/MMaDA-8B-MixCoT"]
GIB = 2**30

CASES = [  # (id, model, arch, rows (x views), length, masked, checkpointing)
    ("gsm8k-standard-ckpt", "llada-8b", LLADA, 4, 512, 4 * 512, True),
    ("gsm8k-mirror-ckpt", "llada-8b", LLADA, 8, 512, 8 * 512, True),
    ("gsm8k-standard-nockpt", "llada-8b", LLADA, 4, 512, 4 * 512, False),
    ("gsm8k-mirror-nockpt-half-masked", "llada-8b", LLADA, 8, 512, 4 * 512, False),
    ("openscience-mirror-ckpt", "llada-8b", LLADA, 2, 8192, 2 * 8192, True),
    ("t2i-mirror-ckpt", "mmada-8b", MMADA, 8, 1539, 8 * 1539, True),
]


@requires_remote_code
@requires_mmada_code
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_estimate_within_10_percent_of_the_measured_peak(case):
    assert REMOTE.is_dir()
    _, model, arch, rows, length, masked, ckpt = case
    measured = scaled_peak(model, rows=rows, length=length, masked=masked, checkpointing=ckpt)
    weights = 2 * arch.params  # the bf16 module (DeepSpeed); the measurement holds exactly these parameters
    step = memory.step_peak(arch, rows * length, masked, ckpt)
    ratio_total = (weights + step) / measured
    ratio_step = step / (measured - weights)
    detail = (f"estimate {(weights + step) / GIB:.2f} GiB (step {step / GIB:.2f}), measured {measured / GIB:.2f} "
              f"GiB (step {(measured - weights) / GIB:.2f})")
    assert 0.9 <= ratio_total <= 1.1, detail
    assert 0.9 <= ratio_step <= 1.1, detail
