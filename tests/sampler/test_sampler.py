"""The batched LLaDA sampler: equal to LLaDA's reference `generate`, batch-invariant, early stop changes nothing,
seeded sampling, bad knobs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdm.data import make_task
from mdm.errors import ConfigError
from mdm.sampler import DecodeConfig, chat_prompt_ids, decode_text, generate, num_transfer_schedule
from tests.eval.test_eval_fixtures import EOSBias, sharp_model, tiny_tokenizer  # noqa: F401

# decoded tokens are argmaxes of float32 logits computed at other batch sizes: run under other kernels too
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model = sharp_model(tok)
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=5, seed=1)]
    assert len({len(p) for p in prompts}) > 1  # prompts of different lengths share batches
    return tok, model, prompts


def run(model, tok, prompts, config, **kw):
    return generate(model, prompts, config, mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, **kw)  # fmt: skip


# ---------------------------------------------------------------- LLaDA's reference, transcribed


def llada_reference_generate(model, prompt, steps, gen_length, block_length, temperature=0.0,
                             remasking="low_confidence", mask_id=None):  # fmt: skip
    """ML-GSAI/LLaDA generate.py `generate` (cfg_scale = 0, not mps), transcribed line by line; one prompt."""

    def add_gumbel_noise(logits, temperature):
        if temperature == 0:
            return logits
        logits = logits.to(torch.float64)
        noise = torch.rand_like(logits, dtype=torch.float64)
        gumbel_noise = (-torch.log(noise)) ** temperature
        return logits.exp() / gumbel_noise

    def get_num_transfer_tokens(mask_index, steps):
        mask_num = mask_index.sum(dim=1, keepdim=True)
        base = mask_num // steps
        remainder = mask_num % steps
        num_transfer_tokens = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
        for i in range(mask_num.size(0)):
            num_transfer_tokens[i, : remainder[i]] += 1
        return num_transfer_tokens

    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, : prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        lo = prompt.shape[1] + num_block * block_length
        block_mask_index = x[:, lo : lo + block_length] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x).logits
            logits_with_noise = add_gumbel_noise(logits, temperature=temperature)
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            elif remasking == "random":
                x0_p = torch.rand((x0.shape[0], x0.shape[1]))
            else:
                raise NotImplementedError(remasking)
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length :] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j, i])
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x


@pytest.mark.parametrize("gen_length, steps, block_length", [(16, 16, 4), (16, 8, 8), (12, 4, 12), (8, 16, 4)])
@torch.no_grad()
def test_equals_llada_reference_greedy(setup, gen_length, steps, block_length):
    tok, model, prompts = setup
    config = DecodeConfig(gen_length=gen_length, steps=steps, block_length=block_length, early_stop=False)
    ours = run(model, tok, prompts[:2], config, batch_size=2)
    for p, got in zip(prompts[:2], ours.tokens):
        ref = llada_reference_generate(model, torch.tensor([p]), steps, gen_length, block_length,
                                       mask_id=tok.mask_token_id)[0, len(p):].tolist()  # fmt: skip
        if tok.eos_token_id in ref:  # ours is cut after the first EOS
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert got == ref


def test_transfer_schedule_is_llada():
    assert num_transfer_schedule(32, 32) == [1] * 32
    assert num_transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert num_transfer_schedule(4, 8) == [1, 1, 1, 1, 0, 0, 0, 0]
    assert sum(num_transfer_schedule(16, 5)) == 16


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("remasking, temperature", [("low_confidence", 0.0), ("random", 0.0), ("low_confidence", 1.0)])
def test_batched_equals_one_at_a_time(setup, remasking, temperature):
    """Left padding + position ids from the attention mask + per-prompt random streams: a prompt's output does
    not depend on the batch it is decoded in."""
    tok, model, prompts = setup
    config = DecodeConfig(gen_length=16, steps=8, block_length=8, remasking=remasking, temperature=temperature, seed=3)
    batched = run(model, tok, prompts, config, batch_size=len(prompts))
    pairs = run(model, tok, prompts, config, batch_size=2)
    single = run(model, tok, prompts, config, batch_size=1)
    assert batched.tokens == single.tokens == pairs.tokens
    assert batched.forward_passes < single.forward_passes


def test_greedy_is_deterministic_and_sampling_follows_the_seed(setup):
    tok, model, prompts = setup
    greedy = DecodeConfig(gen_length=16, steps=16, block_length=8)
    assert run(model, tok, prompts, greedy).tokens == run(model, tok, prompts, greedy).tokens
    hot = DecodeConfig(gen_length=16, steps=16, block_length=8, temperature=2.0, seed=1)
    a, b = run(model, tok, prompts, hot).tokens, run(model, tok, prompts, hot).tokens
    c = run(model, tok, prompts, DecodeConfig(gen_length=16, steps=16, block_length=8, temperature=2.0, seed=2)).tokens
    assert a == b and a != c
    # a vanishing temperature is greedy (Gumbel-max argmax of l / T + g -> argmax l; confidence is untempered)
    cold = DecodeConfig(gen_length=16, steps=16, block_length=8, temperature=1e-6)
    assert run(model, tok, prompts, cold).tokens == run(model, tok, prompts, greedy).tokens


def test_row_keys_make_sampling_independent_of_order(setup):
    tok, model, prompts = setup
    hot = DecodeConfig(gen_length=8, steps=8, block_length=8, temperature=1.0, remasking="random")
    fwd = run(model, tok, prompts, hot, row_keys=["a", "b", "c", "d", "e"]).tokens
    rev = run(model, tok, prompts[::-1], hot, row_keys=["e", "d", "c", "b", "a"]).tokens
    assert fwd == rev[::-1]


# ---------------------------------------------------------------- early stop


def test_early_stop_changes_no_output(setup):
    """Rows stop once their first EOS has no mask before it; outputs equal a full decode, with fewer model rows."""
    tok, model, prompts = setup
    biased = EOSBias(model, tok.eos_token_id, start=min(map(len, prompts)) + 5)
    config = DecodeConfig(gen_length=32, steps=32, block_length=8)
    stop = run(biased, tok, prompts, config, batch_size=len(prompts))
    full = run(biased, tok, prompts, DecodeConfig(gen_length=32, steps=32, block_length=8, early_stop=False),
               batch_size=len(prompts))  # fmt: skip
    assert stop.tokens == full.tokens
    assert all(t[-1] == tok.eos_token_id and len(t) < 32 for t in stop.tokens)
    assert stop.rows_forwarded < full.rows_forwarded
    assert max(stop.steps_run) < 32 and full.steps_run == [32] * len(prompts)
    assert len(set(stop.steps_run)) > 1  # rows left the batch at different steps
    single = run(biased, tok, prompts, config, batch_size=1)
    assert single.tokens == stop.tokens
    text = decode_text(tok, stop.tokens[0])
    assert tok.eos_token not in text and tok.mask_token not in text


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"gen_length": 10, "block_length": 4}, "decoding.block_length"),
        ({"gen_length": 16, "block_length": 4, "steps": 6}, "decoding.steps"),
        ({"remasking": "top_k"}, "decoding.remasking"),
        ({"temperature": -1.0}, "decoding.temperature"),
        ({"gen_length": 0}, "decoding.gen_length"),
    ],
)
def test_bad_decoding_knobs(kwargs, where):
    with pytest.raises(ConfigError) as e:
        DecodeConfig(**kwargs)
    assert e.value.where == where


def test_from_dict_rejects_unknown_keys_and_keeps_base():
    base = DecodeConfig(gen_length=64, steps=64, block_length=16)
    assert DecodeConfig.from_dict({"temperature": 0.5}, base=base).gen_length == 64
    with pytest.raises(ConfigError, match="unknown decoding option"):
        DecodeConfig.from_dict({"top_p": 0.9})


def test_empty_prompt_is_an_error(setup):
    tok, model, _ = setup
    with pytest.raises(ValueError, match="empty prompt"):
        run(model, tok, [[]], DecodeConfig(gen_length=8, steps=8, block_length=8))


def test_prebuilt_padding_mask_equals_the_models_own(setup, monkeypatch):
    """The sampler hands a bidirectional SDPA model its 4D key-padding mask, built once per canvas; the logits and
    the decoded tokens are exactly those of the model building the mask itself from the 2D mask at every call."""
    import mdm.sampler as sampler

    tok, model, prompts = setup
    denoise = sampler._Denoiser(model)
    assert denoise.prebuilt_mask
    x = torch.randint(5, len(tok), (3, 40))
    attn = torch.ones(3, 40, dtype=torch.long)
    attn[1, :6], attn[2, :17] = 0, 0
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        own = model(input_ids=x, attention_mask=attn, position_ids=pos).logits
        assert torch.equal(denoise(x, attn, pos, 0, 40), own)
    config = DecodeConfig(gen_length=32, steps=16, block_length=16)
    fast = run(model, tok, prompts, config, batch_size=5).tokens
    monkeypatch.setattr(sampler, "_prebuilt_mask_ok", lambda model: False)
    assert run(model, tok, prompts, config, batch_size=5).tokens == fast
