"""The numerics policy of the test suite, in code (the reasoning is in tests/README.md, "Numerics policy").

Bit for bit (`==`): anything computed by the same code in the same order on the same machine: keyed draws
(t, masks, weights), integer counts, and a whole run against its rerun or its resumed self.

To `REASSOCIATION_RTOL`: float32 quantities whose reduction order legitimately differs between the two
sides: another micro-batch layout, another process count, another batch size, another CPU's kernels.
"""

from __future__ import annotations

import json
import os

import pytest

FLOAT32_UNIT_ROUNDOFF = 2.0**-24  # u: one rounding of a float32 operation is within a relative u

# The relative tolerance for one float32 scalar (a loss, a gradient norm, a held-out NLL) reduced in another
# order. A sum of n float32 terms in any order is within (n - 1) u sum|x_i| of the exact sum; the losses here sum
# 10^2-10^4 token terms (at most ~6e-5 relative in the worst case, ~sqrt(n) u ~ 1e-6 typically). Measured on the
# suite's cases (layouts, 2 processes, ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE): at most 1.5e-7.
# 1e-5 is ~70x that, and 100x below the smallest real change the pinned checks are shown to catch (1e-3).
REASSOCIATION_RTOL = 1e-5

def approx(expected, rel: float = REASSOCIATION_RTOL):
    """`pytest.approx` with the policy's relative tolerance and no absolute slack."""
    return pytest.approx(expected, rel=rel, abs=0.0)


def close(a: float, b: float, rel: float = REASSOCIATION_RTOL) -> bool:
    """|a - b| <= rel * max(|a|, |b|). With MDM_NUMERICS_LOG=file, each comparison's relative difference is
    appended there (`python -m tests.numerics file` summarizes the margins per test)."""
    return close_to_scale(a, b, max(abs(a), abs(b)), rel)


def close_to_scale(a: float, b: float, scale: float, rel: float = REASSOCIATION_RTOL) -> bool:
    """|a - b| <= rel * scale: for a quantity that is a difference of terms of size `scale`."""
    diff = abs(a - b) / max(scale, 1e-300)
    log = os.environ.get("MDM_NUMERICS_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with open(log, "a") as f:
            f.write(json.dumps({"test": test, "rel_diff": diff, "rtol": rel}) + "\n")
    return diff <= rel


def assert_same_trajectory(log: list[dict], ref: list[dict]) -> None:
    """Two training logs of the same run computed in another order (layout, processes): the keyed draws and
    counts are identical; the float32 losses and gradient norms agree to the reassociation tolerance.

    `loss` is the logged loss after the control variate, loss_raw - offset: a difference, so its tolerance is
    relative to |loss_raw| + |offset|. The offsets are float64 functions of the global batch's row losses in
    position order, so a control variate fed per micro-batch or out of order moves it by O(1). Only a
    well-conditioned control variate can be compared so (EMA with `optimal: false`, offset = b_j): the optimal
    coefficient Cov(l, b) / (Var(b) + 1e-6) from raw EMA moments turns last-bit input differences into
    percent-level offset differences (seen: 3% between 1 and 2 processes under ATEN_CPU_CAPABILITY=default)."""
    assert len(log) == len(ref)
    for x, y in zip(log, ref):
        step = y["step"]
        for key in ("t", "seq_weight", "batch_size", "tokens_seen", "passes", "token_passes"):
            assert x.get(key) == y.get(key), (step, key)
        assert close(x["loss_raw"], y["loss_raw"]), (step, "loss_raw", x["loss_raw"], y["loss_raw"])
        scale = max(abs(e["loss_raw"]) + abs(e["loss_raw"] - e["loss"]) for e in (x, y))
        assert close_to_scale(x["loss"], y["loss"], scale), (step, "loss", x["loss"], y["loss"], scale)
        assert close(x["grad_norm"], y["grad_norm"]), (step, "grad_norm", x["grad_norm"], y["grad_norm"])


if __name__ == "__main__":  # python -m tests.numerics LOG: the largest relative difference seen per test
    import sys
    from collections import defaultdict

    worst = defaultdict(lambda: (0.0, 0.0))
    for line in open(sys.argv[1]):
        e = json.loads(line)
        worst[e["test"]] = max(worst[e["test"]], (e["rel_diff"] / e["rtol"], e["rel_diff"]))
    for test, (frac, diff) in sorted(worst.items()):
        print(f"{diff:9.2e}  ({frac:6.1%} of its tolerance)  {test}")
