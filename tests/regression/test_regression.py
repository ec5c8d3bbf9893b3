"""The CI regression: pinned tiny trajectories hold, and perturbed estimators break them.

Numerics policy (tests/README.md): the pinned numbers are compared with the reference file's own relative
tolerance, which absorbs other CPUs' float32 rounding; the perturbations below are what it must still catch.
"""

import pytest
import torch

from mdm import regression
from mdm.objective.components import masks
from mdm.objective.objective import MDMObjective

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    # a fresh cache: the pinned numbers must not depend on a base model left over from earlier runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_pinned_trajectories_hold(fresh_cache, tmp_path):
    regression.run(tmp_path)
    current = regression.collect(tmp_path)
    assert set(current) == set(regression.reference()["runs"])
    assert regression.compare(current, regression.reference()) == []


def test_the_reference_states_a_tolerance_between_float32_noise_and_a_real_change():
    tol = regression.reference()["tolerance"]
    assert 1e-6 <= tol["rtol"] <= 1e-4 and tol["why"]


def test_flipping_the_mirror_threshold_fails_the_pinned_check(fresh_cache, tmp_path, monkeypatch):
    def flipped(self, q, eligible, draws, t):  # second view U < 1 - q instead of U > 1 - q
        u = draws.field()
        return torch.stack([(u < q) & eligible, (u < 1 - q) & eligible]), self.active(t).to(q.device)

    monkeypatch.setattr(masks.Mirror, "views", flipped)
    regression.run(tmp_path, only="method=mirror,seed=42")
    problems = regression.compare(regression.collect(tmp_path), regression.reference({"arith/mirror/seed42"}))
    assert problems and "arith/mirror/seed42: train loss at step 1" in problems[0]


def test_a_sub_percent_change_of_the_objective_fails_the_pinned_check(fresh_cache, tmp_path, monkeypatch):
    # the masking-rate floor eps 1e-3 -> 2e-3 (p = (1 - eps) t + eps): step 1's loss moves by about 1e-3
    # relative, the held-out loss by about 7e-5; both are far above the pinned tolerance
    monkeypatch.setattr(MDMObjective.__init__, "__defaults__", (2e-3,))
    regression.run(tmp_path, only="method=standard,seed=42")
    current = regression.collect(tmp_path)
    ref = regression.reference({"arith/standard/seed42"})
    pinned = ref["runs"]["arith/standard/seed42"]
    first = abs(current["arith/standard/seed42"]["train_loss_raw"][0] / pinned["train_loss_raw"][0] - 1)
    assert first < 0.01, "the perturbation is meant to be a sub-percent change"
    problems = regression.compare(current, ref)
    assert problems and "arith/standard/seed42: train loss at step 1" in problems[0]
    # the held-out loss alone would catch it too
    ref["runs"]["arith/standard/seed42"]["train_loss_raw"] = current["arith/standard/seed42"]["train_loss_raw"]
    assert [p for p in regression.compare(current, ref) if "held-out loss" in p]
