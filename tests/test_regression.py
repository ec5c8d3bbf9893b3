"""The CI regression: pinned tiny trajectories hold, and a perturbed estimator breaks them."""

import json

import pytest
import torch

from mdm import regression
from mdm.objective.components import masks


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    # a fresh cache: the pinned numbers must not depend on a base model left over from earlier runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_pinned_trajectories_hold(fresh_cache, tmp_path):
    regression.run(tmp_path)
    problems = regression.compare(regression.collect(tmp_path), json.loads(regression.REFERENCE.read_text()))
    assert problems == []


def test_flipping_the_mirror_threshold_fails_the_pinned_check(fresh_cache, tmp_path, monkeypatch):
    def flipped(self, q, eligible, draws, t):  # second view U < 1 - q instead of U > 1 - q
        u = draws.field()
        return torch.stack([(u < q) & eligible, (u < 1 - q) & eligible]), self.active(t).to(q.device)

    monkeypatch.setattr(masks.Mirror, "views", flipped)
    regression.run(tmp_path, only="method=mirror,seed=42")
    reference = {k: v for k, v in json.loads(regression.REFERENCE.read_text()).items() if k == "arith/mirror/seed42"}
    problems = regression.compare(regression.collect(tmp_path), reference)
    assert problems and "arith/mirror/seed42: train loss at step 1" in problems[0]
