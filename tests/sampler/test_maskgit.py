"""MaskGIT decoding (mdm.maskgit) against MMaDA's own `t2i_generate` on a tiny random MMaDA built from MMaDA's code:
the same codes draw for draw under one torch.Generator (with and without classifier-free guidance), and greedy
batched decoding equal to one prompt at a time."""

from __future__ import annotations

import types

import pytest
import torch

from mdm.adapters import load_model
from mdm.adapters.mmada_prompting import T2IIds, t2i_sequences
from mdm.maskgit import maskgit_generate
from tests.llada_fixture import MMADA_CODE, mmada_folder, requires_mmada_code

pytestmark = [requires_mmada_code, pytest.mark.usefixtures("one_thread")]
M, TEXT = 16, 10  # image tokens, caption positions


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = mmada_folder(tmp_path_factory.mktemp("mmada") / "MMaDA-tiny")
    model, tok = load_model(folder, causal=False, dtype=torch.float32, code_dir=MMADA_CODE)
    model.eval()
    c = model.config
    # tiny ids for MMaDA's task tokens (the real ones, 126084..., are beyond a tiny vocabulary)
    ids = T2IIds(bos=tok.bos_token_id, eos=tok.eos_token_id, t2i=5, soi=6, eoi=7, pad=8)
    captions = [tok(t, add_special_tokens=False)["input_ids"] for t in ("a red cube", "two green balls on grass")]
    masked = torch.full((2, M), c.mask_token_id)
    cond = t2i_sequences(captions, masked, ids, TEXT)
    uncond = t2i_sequences([[], []], masked, ids, TEXT)
    return model, c, cond, uncond


def ours(model, c, cond, uncond=None, **kw):
    fn = lambda x, bias: model(x, attention_bias=bias).logits
    extra = {"uncond_input_ids": uncond[0], "uncond_attention_mask": uncond[1]} if uncond is not None else {}
    return maskgit_generate(fn, cond[0], cond[1], image_len=M, text_vocab=c.llm_vocab_size, codebook=c.codebook_size,
                            mask_id=c.mask_token_id, **extra, **kw)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_draw_for_draw_equal_to_mmadas_t2i_generate(setup, guidance):
    model, c, cond, uncond = setup
    prompting = types.SimpleNamespace(text_tokenizer=range(c.llm_vocab_size))  # MMaDA offsets codes by its len()
    theirs = model.t2i_generate(input_ids=cond[0].clone(), attention_mask=cond[1],
                                uncond_input_ids=uncond[0].clone(), uncond_attention_mask=uncond[1],
                                guidance_scale=guidance, temperature=1.0, timesteps=6, seq_len=M,
                                mask_token_id=c.mask_token_id, resolution=TEXT, codebook_size=c.codebook_size,
                                uni_prompting=prompting, generator=torch.Generator().manual_seed(3))
    mine = ours(model, c, cond, uncond, guidance_scale=guidance, temperature=1.0, steps=6,
                generator=torch.Generator().manual_seed(3))
    assert torch.equal(mine, theirs) and mine.shape == (2, M)
    assert ((mine >= 0) & (mine < c.codebook_size)).all()
    other = ours(model, c, cond, uncond, guidance_scale=guidance, steps=6, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other, mine)  # another seed, another draw


def test_greedy_batched_equals_one_prompt_at_a_time(setup):
    model, c, cond, uncond = setup
    batched = ours(model, c, cond, uncond, guidance_scale=1.5, steps=4, greedy=True)
    single = [ours(model, c, tuple(t[i:i + 1] for t in cond[:2]), tuple(t[i:i + 1] for t in uncond[:2]),
                   guidance_scale=1.5, steps=4, greedy=True) for i in range(2)]
    assert torch.equal(batched, torch.cat(single))
