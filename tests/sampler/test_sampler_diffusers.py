"""Cross-check of mdm.sampler against diffusers' LLaDA2Pipeline + BlockRefinementScheduler on the same tiny model.

Where the two algorithms coincide they give the same tokens (test_coincide_*). They coincide when
  - decoding is greedy (diffusers: temperature 0, sampling_method="greedy"),
  - every step commits exactly its scheduled count: diffusers commits every token above `threshold` when there are
    at least as many as the schedule asks for; threshold > 1 turns that off (pure top-k, as LLaDA),
  - editing of committed tokens is off (editing_threshold=None; LLaDA never revisits a committed token),
  - the prompt length is a multiple of block_length (diffusers aligns blocks to absolute positions),
  - diffusers' per-block `num_inference_steps` equals our `steps / num_blocks`,
  - and there is a single generation block, or the model cannot see later blocks anyway (see below).

What differs where they do not (test_differences_* pin down 1-3):
  1. Context. diffusers feeds the model only the sequence up to the end of the current block (block-causal
     decoding, LLaDA2's training); LLaDA feeds the whole canvas, later blocks still masked. With several blocks,
     diffusers equals our sampler run one block at a time with the previous blocks appended to the prompt.
  2. Block alignment. diffusers' blocks start at multiples of block_length from position 0, so with a prompt
     that is not a multiple of block_length, the first generation block is shorter (it shares a block with the
     prompt tail) and the schedule is spread over fewer tokens; LLaDA's blocks start at the end of the prompt.
  3. Steps. diffusers' `num_inference_steps` is per block; LLaDA's `steps` is the total, split over blocks.
  4. Commit rule. diffusers commits all tokens above `threshold` (default 0.7) when they reach the quota, and
     by default edits committed tokens (editing_threshold 0.5, up to max_post_steps extra passes); LLaDA
     commits exactly the quota, by confidence, and never edits.
  5. Sampling. diffusers samples with torch.multinomial from the tempered (top-k/top-p filtered) softmax and
     uses that tempered probability as confidence; LLaDA takes the Gumbel-max in float64 and the untempered
     softmax probability as confidence. diffusers has no random remasking.
  6. Padding. diffusers gives every row position ids 0..L-1, so a left-padded prompt's positions are shifted by
     its padding; ours counts positions from each row's first real token. For RoPE models (Gemma3, LLaDA) a
     uniform shift changes nothing, since attention only sees relative positions (test_coincide_left_padding);
     for absolute-position models only ours is batch-invariant.
  7. EOS. Both stop a row once an EOS is committed with no mask before it; diffusers keeps the row in the batch
     (frozen) and returns the whole canvas, ours drops it from later forward passes and cuts after the EOS.
"""

from __future__ import annotations

import pytest
import torch

from mdm.data import make_task
from mdm.sampler import DecodeConfig, chat_prompt_ids, generate
from tests.eval.test_eval_fixtures import EOSBias, sharp_model, tiny_tokenizer  # noqa: F401

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]

diffusers = pytest.importorskip("diffusers")

BLOCK = 8


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model = sharp_model(tok, seed=1)
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=3, seed=2)]
    aligned = [p[: 4 * BLOCK] for p in prompts]  # same length, a multiple of the block length
    return tok, model, aligned, prompts


def pipeline(model, tok):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    pipe = LLaDA2Pipeline(model=model, scheduler=BlockRefinementScheduler(), tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_generate(model, tok, prompts, gen_length, steps_per_block, eos_early_stop=False):
    pipe = pipeline(model, tok)
    out = pipe(input_ids=torch.tensor(prompts), gen_length=gen_length, block_length=BLOCK,
               num_inference_steps=steps_per_block, temperature=0.0, sampling_method="greedy", threshold=1.01,
               editing_threshold=None, eos_early_stop=eos_early_stop, mask_token_id=tok.mask_token_id,
               eos_token_id=tok.eos_token_id, output_type="seq")  # fmt: skip
    return out.sequences.tolist()


def ours(model, tok, prompts, gen_length, steps, early_stop=False, block_length=BLOCK):
    config = DecodeConfig(gen_length=gen_length, steps=steps, block_length=block_length, early_stop=early_stop)
    return generate(model, prompts, config, mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, batch_size=len(prompts)).tokens  # fmt: skip


def cut(seq, eos):
    return seq[: seq.index(eos) + 1] if eos in seq else seq


@pytest.mark.parametrize("steps", [8, 4, 2])
def test_coincide_single_block_greedy(setup, steps):
    tok, model, aligned, _ = setup
    theirs = diffusers_generate(model, tok, aligned, BLOCK, steps)
    assert ours(model, tok, aligned, BLOCK, steps) == [cut(s, tok.eos_token_id) for s in theirs]


def test_coincide_eos_stop(setup):
    """Both freeze a row at its first EOS with no mask before it; the text up to that EOS is the same."""
    tok, model, aligned, _ = setup
    biased = EOSBias(model, tok.eos_token_id, start=len(aligned[0]) + 3)
    theirs = diffusers_generate(biased, tok, aligned, BLOCK, 8, eos_early_stop=True)
    mine = ours(biased, tok, aligned, BLOCK, 8, early_stop=True)
    assert all(tok.eos_token_id in m for m in mine)
    assert mine == [cut(s, tok.eos_token_id) for s in theirs]


def test_differences_context_of_later_blocks(setup):
    """(1) + (3): with two blocks, diffusers (4 steps per block) equals our sampler run block by block (4 steps
    each, earlier blocks appended to the prompt, so later blocks are invisible), and differs from LLaDA's
    full-canvas decode with 8 steps in total."""
    tok, model, aligned, _ = setup
    theirs = diffusers_generate(model, tok, aligned, 2 * BLOCK, 4)
    first = ours(model, tok, aligned, BLOCK, 4)
    assert all(tok.eos_token_id not in f for f in first)
    second = ours(model, tok, [p + f for p, f in zip(aligned, first)], BLOCK, 4)
    assert [f + s for f, s in zip(first, second)] == theirs
    full_canvas = ours(model, tok, aligned, 2 * BLOCK, 8)
    assert full_canvas != theirs


def test_differences_block_alignment(setup):
    """(2): with a prompt of 4 * BLOCK - 3 tokens, diffusers' first generation block is the 3 positions left in the
    prompt's last block, decoded one token per step with nothing after them: our sampler with a 3-token canvas."""
    tok, model, aligned, _ = setup
    short = [p[:-3] for p in aligned]
    theirs = diffusers_generate(model, tok, short, BLOCK, 8)
    head = ours(model, tok, short, 3, 3, block_length=3)
    assert [t[:3] for t in theirs] == head
    assert ours(model, tok, short, BLOCK, 8) != [cut(t, tok.eos_token_id) for t in theirs]


def test_coincide_left_padding(setup):
    """(6): a left-padded prompt decodes as it does alone in both, ours by construction (position ids counted from
    the first real token), diffusers' because RoPE attention only sees relative positions, which a uniform shift
    by the padding leaves unchanged."""
    tok, model, _, prompts = setup
    a, b = prompts[0][:24], prompts[1][:32]
    pipe = pipeline(model, tok)
    kw = dict(gen_length=BLOCK, block_length=BLOCK, num_inference_steps=8, temperature=0.0, sampling_method="greedy",
              threshold=1.01, editing_threshold=None, eos_early_stop=False, mask_token_id=tok.mask_token_id,
              output_type="seq")  # fmt: skip
    alone = pipe(input_ids=torch.tensor([a]), **kw).sequences[0].tolist()
    mask = torch.tensor([[0] * 8 + [1] * 24, [1] * 32])
    padded = [tok.pad_token_id] * 8 + a
    batched = pipe(input_ids=torch.tensor([padded, b]), attention_mask=mask, **kw).sequences[0].tolist()
    mine = ours(model, tok, [a, b], BLOCK, 8)[0]
    assert alone == batched
    assert mine == cut(alone, tok.eos_token_id)
