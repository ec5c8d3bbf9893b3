"""MMaDA's text-to-image sequences (mdm.adapters.mmada_prompting) token for token against MMaDA's own
`UniversalPrompting` (the fixture's prompting_utils.py, with the reserved ids of the real checkpoints)."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import pytest
import torch

from mdm.adapters.mmada_prompting import RESERVED, T2IIds, attention_bias, image_token_ids, t2i_sequences
from tests.llada_fixture import REMOTE, llada_tokenizer

PROMPTING = REMOTE / "mmada" / "prompting_utils.py"
pytestmark = pytest.mark.skipif(not PROMPTING.is_file(), reason=f"MMaDA fixture not found at {PROMPTING}")


def universal_prompting(tok, max_text_len: int, cond_dropout_prob: float):
    spec = importlib.util.spec_from_file_location("mmada_prompting_fixture", PROMPTING)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its id table
        return module.UniversalPrompting(tok, max_text_len=max_text_len, cond_dropout_prob=cond_dropout_prob,
                                         use_reserved_token=True)


@pytest.fixture(scope="module")
def case():
    tok = llada_tokenizer()
    captions = ["a red cube on a blue floor", "two green spheres", "", "a very long caption " * 6]
    texts = [tok(c, add_special_tokens=False)["input_ids"] for c in captions]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 8192, (len(captions), 16), generator=g)
    return tok, texts, image_token_ids(codes, len(tok)), codes, len(tok)  # MMaDA's prompting adds tokens to tok


@pytest.mark.parametrize("max_text_len", [12, 40])  # 12: the long caption is cut (and ends with <eos>)
def test_generation_sequences_equal_mmadas(case, max_text_len):
    tok, texts, images, *_ = case
    masked = torch.full_like(images, 126336)  # generation: every image slot is the mask token
    theirs = universal_prompting(tok, max_text_len, 0.0).t2i_gen_prompt([list(t) for t in texts], masked)
    ours = t2i_sequences(texts, masked, T2IIds.of(tok), max_text_len)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1]) and ours[2] is None
    assert ours[0].shape == (4, max_text_len + 1 + 16 + 2)
    row = ours[0][0].tolist()
    first = row.index(RESERVED["<|t2i|>"])
    assert set(row[:first]) <= {RESERVED["[iPAD]"]} and row[first + 1] == tok.bos_token_id
    assert row[-1] == RESERVED["<|eoi|>"] and row[-18] == RESERVED["<|soi|>"]


@pytest.mark.parametrize("drop", [0.0, 1.0])  # 1.0: every caption dropped (classifier-free guidance rows)
def test_training_sequences_and_labels_equal_mmadas(case, drop):
    tok, texts, images, codes, text_vocab = case
    noised = images.clone()
    noised[:, ::3] = 126336
    theirs = universal_prompting(tok, 40, drop).t2i_prompt([list(t) for t in texts], noised, images)
    ours = t2i_sequences(texts, noised, T2IIds.of(tok), 40, labels=images, drop=[drop == 1.0] * len(texts))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert (ours[2] == -100).sum() == (ours[1] == 0).sum()  # exactly the [iPAD] positions are ignored
    assert torch.equal(ours[2][:, -17:-1] - text_vocab, codes)  # the image labels are the codes, offset


def test_attention_bias_is_query_and_key_real(case):
    tok, texts, images, *_ = case
    _, mask, _ = t2i_sequences(texts, images, T2IIds.of(tok), 40)
    bias = attention_bias(mask)
    assert bias.shape == (4, 1, mask.shape[1], mask.shape[1]) and bias.dtype == torch.bool
    i = int((mask[0] == 0).sum())  # the first real position of row 0
    assert not bias[0, 0, i - 1].any() and not bias[0, 0, :, i - 1].any() and bias[0, 0, i:, i:].all()
