"""The numerics policy's own checks (tests/README.md): its tolerance admits float32 reassociation and still
catches the changes the cross-layout tests exist for."""

from __future__ import annotations

import pytest
import torch

from mdm.objective.components.control_variates import BinEMA
from tests.numerics import FLOAT32_UNIT_ROUNDOFF, REASSOCIATION_RTOL, assert_same_trajectory, close

pytestmark = pytest.mark.numerics


def test_the_tolerance_admits_another_summation_order_and_rejects_a_real_change():
    x = torch.rand(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float32) * 8
    pairwise, sequential = float(x.sum()), 0.0
    for v in x.tolist():  # left to right, one float32 rounding per addition
        sequential = float(torch.tensor(sequential, dtype=torch.float32) + torch.tensor(v, dtype=torch.float32))
    assert pairwise != sequential and close(pairwise, sequential)  # float32 reassociation: admitted
    assert abs(pairwise - sequential) <= 4096 * FLOAT32_UNIT_ROUNDOFF * float(x.abs().sum())  # the textbook bound
    assert not close(pairwise, pairwise * (1 + 10 * REASSOCIATION_RTOL))  # a 1e-4 change: caught
    w = x.clone()
    w[0] = 0  # one of 4096 terms dropped (~2.4e-4 of the sum): caught
    assert not close(float(w.sum()), pairwise)


def fake_log(rows: list[torch.Tensor], ts: list[torch.Tensor], order=None) -> list[dict]:
    """A training log as the trainer writes it, with the EMA control variate (c = 1) fed in `order`."""
    cv, log = BinEMA(BinEMA.Config(bins=4, eta=0.2, optimal=False)), []
    for step, (r, t) in enumerate(zip(rows, ts), start=1):
        idx = torch.arange(len(r)) if order is None else order(len(r))
        offsets = torch.empty_like(r)
        offsets[idx] = cv.offsets(t[idx], r[idx])
        log.append({"step": step, "t": t.tolist(), "seq_weight": [1.0] * len(r), "batch_size": len(r),
                    "tokens_seen": 100 * step, "passes": 8 * step, "token_passes": 800 * step,
                    "loss_raw": float(r.mean()), "loss": float((r - offsets).mean()), "grad_norm": float(r.norm())})
    return log


def test_same_trajectory_admits_last_bit_differences_and_catches_a_control_variate_fed_out_of_order():
    g = torch.Generator().manual_seed(1)
    rows = [4 + torch.rand(8, generator=g, dtype=torch.float64) for _ in range(6)]
    ts = [torch.rand(8, generator=g, dtype=torch.float64) for _ in range(6)]
    ref = fake_log(rows, ts)
    # the same rows rounded through float32 (what another layout or CPU gives): admitted
    assert_same_trajectory(fake_log([r.float().double() * (1 + 1e-7) for r in rows], ts), ref)
    # the control variate updated in another row order: its offsets move, the raw losses do not
    shuffled = fake_log(rows, ts, order=lambda n: torch.arange(n).flip(0))
    assert all(close(a["loss_raw"], b["loss_raw"]) for a, b in zip(shuffled, ref))
    with pytest.raises(AssertionError, match="'loss'"):
        assert_same_trajectory(shuffled, ref)
    # one row's loss changed by 1e-3: caught on the raw loss
    bumped = [r.clone() for r in rows]
    bumped[2][3] *= 1 + 1e-3
    with pytest.raises(AssertionError, match="loss_raw"):
        assert_same_trajectory(fake_log(bumped, ts), ref)
