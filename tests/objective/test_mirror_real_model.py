"""MIRROR halves (at least) the pattern noise A at t < 0.5, measured on the tiny Gemma3 backbone."""

import torch

from mdm.models import build_tiny_model
from mdm.objective import MDMBatch, MDMObjective, Method
from mdm.objective.components.t_samplers import TSampler
from tests.helpers import FakeTokenizer, synthetic_batch


class FixedT(TSampler):
    name = "fixed"

    def __init__(self, values):
        super().__init__(TSampler.Config())
        self.values = values

    def sample(self, n, gen):
        return self.values.clone(), torch.ones_like(self.values)


def pattern_noise(model, mask: str, n_x0=8, ts=(0.1, 0.25, 0.4), c=64):
    """Mean over (x0, t) of the variance over masks of the per-sequence loss (A restricted to these t)."""
    base = synthetic_batch(n_x0, length=48, seed=3, vocab=64)
    reps = len(ts) * c
    rows = base.select(torch.arange(n_x0).repeat_interleave(reps))
    t = torch.tensor(ts, dtype=torch.float64).repeat_interleave(c).repeat(n_x0)
    batch = MDMBatch(rows.input_ids, rows.attention_mask, rows.prompt_lengths, torch.arange(len(t)))
    method = Method.build({"t_sampler": FixedT(t), "mask": mask})
    obj = MDMObjective(method, mask_token_id=FakeTokenizer.mask_token_id)
    with torch.no_grad():
        losses = torch.cat([obj(model, batch.select(slice(i, i + 256)), seed=0, step=0,
                                global_batch_size=len(t)).row_losses for i in range(0, len(t), 256)])
    return losses.view(n_x0 * len(ts), c).var(dim=1).mean().item()


def test_mirror_halves_pattern_noise_below_one_half_on_the_tiny_backbone():
    model = build_tiny_model(FakeTokenizer(64), seed=0).eval()
    standard = pattern_noise(model, "bernoulli")
    mirror = pattern_noise(model, "mirror")
    independent = pattern_noise(model, {"name": "multisample", "k": 2})
    assert standard > 0
    assert mirror <= 0.5 * standard, (mirror, standard)
    # the fair peer at equal cost only halves it (independent views): MIRROR must beat it clearly
    assert 0.4 * standard < independent < 0.6 * standard, (independent, standard)
    assert mirror < 0.9 * independent
