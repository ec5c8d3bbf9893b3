"""Shared helpers of the sampler / eval / lm-eval tests: a tiny tokenizer, a tiny untrained MDM whose predictions
depend on context (so decoding tests are not decided by float noise), an EOS-biased wrapper, a saved run folder.

The default tiny backbone at init predicts almost the same token with almost the same confidence everywhere
(tied embeddings, 0.02-std weights), which would make confidence orderings a matter of rounding. `sharp_model`
unties the head and uses unit-variance weights, so confidences differ by ~1e-3 between positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Gemma3ForCausalLM

from mdm.data import build_tokenizer, make_task
from mdm.models import TinySize, tiny_config

SMALL = TinySize(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                 intermediate_size=64, max_position_embeddings=512)  # fmt: skip



def tiny_tokenizer():
    texts = [e["prompt"] + "\n" + e["response"] for e in make_task("arith", "train", n=200, seed=0)]
    return build_tokenizer(texts, vocab_size=400)


def sharp_model(tokenizer, seed: int = 0, causal: bool = False):
    config = tiny_config(tokenizer, causal=causal, size=SMALL)
    config.tie_word_embeddings = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "embed" in name:
                    p.normal_(0, SMALL.hidden_size**-0.5)
                elif p.dim() == 2:
                    p.normal_(0, p.shape[1] ** -0.5 * (3.0 if "lm_head" in name else 1.0))
    return model.eval()


class EOSBias(torch.nn.Module):
    """Adds `bias` to the EOS logit at positions >= `start` (position ids), so rows end at different steps."""

    def __init__(self, inner, eos_id: int, start: int, bias: float = 12.0):
        super().__init__()
        self.inner, self.eos_id, self.start, self.bias = inner, eos_id, start, bias
        self.config = inner.config

    @property
    def device(self):  # diffusers' pipelines ask their components for it
        return self.inner.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1])[None].expand_as(input_ids)
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            logits_to_keep=logits_to_keep, use_cache=False).logits.clone()  # fmt: skip
        pos = position_ids[:, logits_to_keep] if torch.is_tensor(logits_to_keep) else position_ids
        pos = pos[:, -logits.shape[1] :]
        logits[..., self.eos_id] += self.bias * (pos >= self.start).to(logits.dtype)
        return type("Out", (), {"logits": logits})()


def save_run(root: Path, tokenizer, model, record: dict | None = None, sub: str = "final") -> Path:
    model_dir = root / sub if sub else root
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    if record is not None:
        (root / "record.json").write_text(json.dumps(record))
    return root


def test_sharp_model_depends_on_context():
    tok = tiny_tokenizer()
    model = sharp_model(tok)
    ids = tok("Ava has 3 apples.", add_special_tokens=False).input_ids
    x = torch.tensor([ids + [tok.mask_token_id] * 8])
    with torch.no_grad():
        conf = model(input_ids=x).logits[0, len(ids) :].softmax(-1).max(-1).values
        x[0, len(ids) + 2] = ids[0]
        conf2 = model(input_ids=x).logits[0, len(ids) :].softmax(-1).max(-1).values
    assert conf.max() - conf.min() > 1e-3  # confidences are not tied
    assert not torch.allclose(conf, conf2)  # and depend on the canvas
