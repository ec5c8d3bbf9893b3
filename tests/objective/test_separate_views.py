"""`training.separate_views`: MIRROR / multisample views back-propagated one at a time
(MDMObjective.loss_by_view) give the joint pass's loss, row losses and gradients; a method whose loss is not linear
in its views (the released P-POTS's clamp of each row's mean) is refused in one line; and a tiny training run with
it follows the joint run's trajectory to float32 reassociation."""

from __future__ import annotations

import pytest
import torch

from mdm.errors import ConfigError
from mdm.objective import MDMObjective, Method
from tests.helpers import MASK_ID, synthetic_batch


class Bidirectional(torch.nn.Module):
    """A model whose logits at a position depend on every token of the row (through the masked ones too)."""

    def __init__(self, vocab: int = 64, width: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(vocab, width, generator=g))
        self.mix = torch.nn.Parameter(torch.randn(width, width, generator=g) / width**0.5)
        self.out = torch.nn.Parameter(torch.randn(width, vocab, generator=g) / width**0.5)

    def token_ce(self, noised, attention_mask, targets, masked):
        h = self.emb[noised]
        context = (h * attention_mask[..., None]).sum(1, keepdim=True) / attention_mask.sum(1)[:, None, None]
        logits = torch.tanh(h + context @ self.mix) @ self.out
        ce = torch.zeros(masked.shape)
        ce[masked] = torch.nn.functional.cross_entropy(logits[masked], targets[masked], reduction="none")
        return ce


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("method", ["mirror", "multisample2", "mirror_released_plus", "ppots+mirror+ema",
                                    "strats+mirror", "standard"])
def test_views_one_at_a_time_equal_the_joint_pass(method):
    spec = {"preset": method, "t_sampler": {"density": "flat"}} if "ppots" in method else method
    batch = synthetic_batch(8, 24, seed=3)
    losses, rows, grads, calls = [], [], [], []
    for separate in (False, True):
        obj = MDMObjective(Method.build(spec), MASK_ID)
        model = Bidirectional()
        draws = obj.draw(batch, seed=5, step=2, global_batch_size=8)
        if separate:
            out = obj.loss_by_view(model.token_ce, batch, draws, lambda part: (calls.append(1), part.backward()))
        else:
            out = obj.loss(model.token_ce, batch, draws)
            out.loss.backward()
        losses.append(out.loss.item())
        rows.append(out.row_losses)
        grads.append(_grads(model))
    assert len(calls) == draws.masked.shape[0]  # one backward per view, every micro-batch alike
    assert losses[1] == pytest.approx(losses[0], rel=1e-6, abs=1e-7)
    torch.testing.assert_close(rows[1], rows[0], rtol=1e-6, atol=1e-7)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads[0])  # a test that cannot fail is a defect


def test_a_view_no_row_uses_still_runs_with_weight_zero():
    """mirror_released_plus drops the second view of rows with t >= 0.9: with every t above it, that view's pass
    runs on one row at weight 0 (the same number of backward calls whatever the draws)."""
    obj = MDMObjective(Method.build("mirror_released_plus"), MASK_ID)
    batch = synthetic_batch(4, 16, seed=1)
    draws = obj.draw(batch, seed=0, step=0, global_batch_size=4)
    draws.active[1] = False
    model, parts = Bidirectional(), []
    out = obj.loss_by_view(model.token_ce, batch, draws, lambda part: (parts.append(part.item()), part.backward()))
    assert len(parts) == 2 and parts[1] == 0.0 and out.passes == 4
    joint = MDMObjective(Method.build("mirror_released_plus"), MASK_ID).loss(Bidirectional().token_ce, batch, draws)
    assert out.loss.item() == pytest.approx(joint.loss.item(), rel=1e-6)


def test_clamped_row_mean_is_refused():
    obj = MDMObjective(Method.build({"preset": "ppots_released+mirror_released_plus",
                                     "t_sampler": {"density": "flat"}}), MASK_ID)
    batch = synthetic_batch(4, 16)
    draws = obj.draw(batch, seed=0, step=0, global_batch_size=4)
    with pytest.raises(ConfigError) as e:
        obj.loss_by_view(Bidirectional().token_ce, batch, draws, lambda part: part.backward())
    assert e.value.where == "training.separate_views" and "set separate_views false" in e.value.problem


def test_training_with_separate_views_follows_the_joint_run(tmp_path):
    from tests.numerics import assert_same_trajectory
    from tests.train.test_train import tiny_run, train

    method = {"preset": "mirror+ema", "control_variate": {"optimal": False}}  # well-conditioned: tests/numerics.py
    joint = train(tiny_run(tmp_path / "joint", tmp_path / "cache", method=method))
    apart = train(tiny_run(tmp_path / "apart", tmp_path / "cache", method=method, training__separate_views=True))
    assert apart[0]["status"] == "done"
    assert_same_trajectory(apart[1], joint[1])
