"""The pilot on the tiny Gemma3 backbone: batching invariance, shared tables, ARM, gradient mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdm.errors import ConfigError
from mdm.models import build_tiny_model
from mdm.objective import MDMBatch, MDMObjective, Method
from mdm.variance.gradient import LinearGradients
from mdm.variance.pilot import FixedT, run_mdm
from mdm.variance.profile import Profiler, run_variance
from tests.helpers import MASK_ID, FakeTokenizer, synthetic_batch
from tests.numerics import REASSOCIATION_RTOL, approx

TOK = FakeTokenizer(64)


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(TOK, seed=0).eval()


@pytest.fixture(scope="module")
def x0():
    return synthetic_batch(4, length=40, seed=3, vocab=64)


def test_table_does_not_depend_on_the_token_budget(model, x0):
    t = np.array([0.2, 0.5, 0.9])
    method = Method.build("mirror")
    big = run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=1, token_budget=100_000)
    small = run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=1, token_budget=200)
    # other token budgets batch other rows together: float32 reassociation, relative to each cell
    assert np.allclose(big.losses, small.losses, rtol=REASSOCIATION_RTOL, atol=0.0)
    assert big.forward_rows == small.forward_rows == 4 * 3 * 3 * 2
    # the same seed gives the same table; another seed another one
    again = run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=1, token_budget=100_000)
    other = run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=2, token_budget=100_000)
    assert np.array_equal(big.losses, again.losses) and not np.allclose(big.losses, other.losses)


def test_a_sharded_pilot_splits_the_rows_and_sums_to_the_one_process_table(model, x0):
    """2 ranks (a stand-in for accelerate's Accelerator whose reduce keeps this rank's part): the ranks fill
    disjoint rows with the same number of forwards each; their sum is the one-process table, bit for bit (the
    same chunks, so the same batches)."""
    import contextlib

    class Rank:
        num_processes, device = 2, "cpu"

        def __init__(self, index):
            self.process_index = index

        def autocast(self):
            return contextlib.nullcontext()

        def reduce(self, tensor, reduction):
            return tensor

    t = np.array([0.2, 0.5, 0.9])
    method = Method.build("mirror")
    full = run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=1, token_budget=300)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        parts, forwards = [], []
        for index in (0, 1):
            calls.clear()
            parts.append(run_mdm(model, x0, method, t, 3, mask_token_id=MASK_ID, seed=1, token_budget=300,
                                 accelerator=Rank(index)))
            forwards.append(len(calls))
    finally:
        hook.remove()
    filled = [p.losses != 0 for p in parts]
    assert forwards[0] == forwards[1] > 0 and not (filled[0] & filled[1]).any() and (filled[0] | filled[1]).all()
    assert np.array_equal(parts[0].losses + parts[1].losses, full.losses)
    assert parts[0].forward_rows + parts[1].forward_rows == full.forward_rows


def test_a_cell_is_the_row_loss_the_method_backpropagates_at_that_t(model, x0):
    t = np.array([0.3, 0.7])
    run = run_mdm(model, x0, Method.build("multisample2"), t, 2, mask_token_id=MASK_ID, seed=5, token_budget=4096)
    i, j, k = 2, 1, 1
    row = (i * 2 + j) * 2 + k
    all_t = torch.tensor(np.repeat(t, 2), dtype=torch.float64).repeat(4)
    obj = MDMObjective({"t_sampler": FixedT(all_t), "mask": {"name": "multisample", "k": 2}}, MASK_ID)
    one = x0.select(torch.tensor([i]))
    batch = MDMBatch(one.input_ids, one.attention_mask, one.prompt_lengths, torch.tensor([row]))
    with torch.no_grad():
        direct = obj(model, batch, seed=5, step=0, global_batch_size=len(all_t)).row_losses.item()
    assert run.losses[i, j, k] == approx(direct)


def test_token_budget_below_one_sequence_is_a_config_error(model, x0):
    with pytest.raises(ConfigError, match="cannot hold one sequence"):
        run_mdm(model, x0, Method.build("mirror"), np.array([0.5]), 2, mask_token_id=MASK_ID, seed=0,
                token_budget=50)


def test_methods_differing_only_in_t_share_one_table_and_mirror_halves_pattern_noise(model):
    x0 = synthetic_batch(5, length=48, seed=3, vocab=64)
    profiler = Profiler(model, x0, mask_token_id=MASK_ID, b=10, c=12, seed=0, token_budget=8192)
    skewed = {"grid": [0.0, 1.0], "density": [2.0, 0.5]}
    result = run_variance(profiler, ["standard", {"name": "ppots", "preset": "ppots",
                                                  "t_sampler": {"density": skewed}}, "strats", "mirror"],
                          bootstrap=50)
    assert result["forward_rows"] == 5 * 10 * 12 * (1 + 2)  # standard's table serves ppots and strats
    m = result["methods"]
    for name in m:
        assert set(m[name]) >= {"A", "B", "C", "total", "A_se", "B_se", "C_se", "total_se", "t", "g", "v", "A_by_t"}
        assert all(np.isfinite(m[name][k]) for k in ("A", "B", "C", "total"))
    assert m["strats"]["sample"]["total"] == pytest.approx(m["standard"]["total"])  # same single-sample law
    assert m["strats"]["B"] <= m["standard"]["B"] + 1e-12 and m["strats"]["batch"]["strata"] == 6
    assert m["ppots"]["C"] == pytest.approx(m["standard"]["C"])  # t-samplers cannot change the data term
    assert m["ppots"]["g"] == m["standard"]["g"]  # same unweighted loss; the sample differs by w(t)
    assert m["mirror"]["A_low_t"] <= 0.5 * m["standard"]["A_low_t"]  # METHODS.md section 4's theorem


def test_arm_has_no_pattern_or_rate_noise(model):
    arm = build_tiny_model(TOK, causal=True, seed=1).eval()
    x0 = synthetic_batch(4, length=32, seed=4, vocab=64)
    profiler = Profiler(model, x0, mask_token_id=MASK_ID, b=3, c=2, arm_model=arm, token_budget=4096)
    entry = run_variance(profiler, ["arm"], bootstrap=20)["methods"]["arm"]
    assert entry["A"] == 0 and entry["B"] == 0 and entry["A_se"] == 0 and entry["C"] > 0
    assert profiler.forward_rows == 4  # one forward per clean sequence


def test_per_sample_gradients_from_hooks_match_one_backward_per_row(model, x0):
    t = np.array([0.3, 0.6])
    method = Method.build("mirror")
    probe = LinearGradients(model, "last", projection=0)
    run = run_mdm(model, x0, method, t, 2, mask_token_id=MASK_ID, seed=0, token_budget=600, probe=probe)
    assert run.grads.shape == (4, 2, 2, probe.size)
    all_t = torch.tensor(np.repeat(t, 2), dtype=torch.float64).repeat(4)
    obj = MDMObjective({"t_sampler": FixedT(all_t), "mask": "mirror"}, MASK_ID)
    for i, j, k in [(0, 0, 0), (3, 1, 1), (2, 0, 1)]:
        row = (i * 2 + j) * 2 + k
        one = x0.select(torch.tensor([i]))
        batch = MDMBatch(one.input_ids, one.attention_mask, one.prompt_lengths, torch.tensor([row]))
        model.zero_grad()
        obj(model, batch, seed=0, step=0, global_batch_size=len(all_t)).loss.backward()
        direct = torch.cat([m.weight.grad.flatten() for _, m in probe.modules]).numpy()
        # elements of a gradient cancel: the tolerance is relative to the vector's largest element
        assert np.allclose(run.grads[i, j, k], direct, rtol=REASSOCIATION_RTOL,
                           atol=REASSOCIATION_RTOL * np.abs(direct).max())
        model.zero_grad()
    # a random projection preserves squared norms in expectation (Johnson-Lindenstrauss)
    projected = run_mdm(model, x0, method, t, 2, mask_token_id=MASK_ID, seed=0, token_budget=600,
                        probe=LinearGradients(model, "last", projection=256))
    ratio = (projected.grads**2).sum() / (run.grads**2).sum()
    assert 0.8 < ratio < 1.25
    assert all(p.requires_grad for p in model.parameters())  # the probe restores requires_grad


def test_gradient_mode_decomposes_traces(model, x0):
    profiler = Profiler(model, x0, mask_token_id=MASK_ID, b=3, c=3, token_budget=4096,
                        gradient={"params": r"layers\.2\.mlp", "projection": 32})
    result = run_variance(profiler, ["standard", "mirror"], bootstrap=20)
    assert result["mode"] == "gradient" and result["gradient"]["projection"] == 32
    assert all(".mlp." in n for n in result["gradient"]["modules"])
    m = result["methods"]
    assert m["standard"]["A"] > 0 and m["mirror"]["A"] < m["standard"]["A"]
    with pytest.raises(ConfigError, match="no nn.Linear module name matches"):
        LinearGradients(model, "nothing_like_this")
