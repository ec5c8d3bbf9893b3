"""Decoding strategies and KV caches (`mdm.decoding`, `mdm.adapters.kv`): the default is the paper's decoding,
threshold above 1 is LLaDA's one-token schedule, cached logits equal uncached ones where the math says so, a model
that cannot be cached is refused in one line, and another decoding's score never overwrites the paper's."""

from __future__ import annotations

import json

import pytest
import torch

from mdm.adapters import checked, load_model
from mdm.adapters.kv import kv_forward
from mdm.cli import main as mdm_main
from mdm.data import make_task, mask_token_id_of
from mdm.decoding import decoding_key, parse_decoding
from mdm.decoding.rules import Factor, Threshold
from mdm.errors import ConfigError
from mdm.eval.api import evaluate_run
from mdm.sampler import DecodeConfig, chat_prompt_ids, generate
from tests.eval.test_eval_fixtures import EOSBias, save_run, sharp_model, tiny_tokenizer
from tests.llada_fixture import (
    MMADA_CODE,
    llada_folder,
    mmada_folder,
    requires_mmada_code,
    requires_remote_code,
)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]
LLADA_KNOBS = {"sampler", "gen_length", "steps", "block_length", "temperature", "remasking", "early_stop", "seed"}


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=6, seed=1)]
    return tok, sharp_model(tok), prompts


def run(model, tok, prompts, config, mask_id=None, **kw):
    return generate(model, prompts, config, mask_token_id=tok.mask_token_id if mask_id is None else mask_id,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)  # fmt: skip


def test_default_decoding_records_llada_knobs_only_and_its_key_is_exact():
    d = DecodeConfig().to_dict()
    assert set(d) == LLADA_KNOBS and decoding_key(d) == "exact"
    t = DecodeConfig(strategy="threshold", threshold=0.9, cache="dual").to_dict()
    assert t["strategy"] == "threshold" and t["threshold"] == 0.9 and "factor" not in t
    assert decoding_key(t) == "threshold0.9+dual" and decoding_key(DecodeConfig(cache="prefix").to_dict()) == "exact+prefix"
    assert parse_decoding("threshold=0.8,dual") == {"threshold": 0.8, "strategy": "threshold", "cache": "dual"}
    for bad in ("nosuch", "cache=triple", "steps=4", "threshold=x"):
        with pytest.raises(ConfigError):
            parse_decoding(bad)
    with pytest.raises(ConfigError, match="low_confidence"):
        DecodeConfig(strategy="threshold", remasking="random")


def test_rules_on_hand_made_confidences():
    inf = float("-inf")
    conf = torch.tensor([[0.95, 0.5, 0.92, inf], [0.3, 0.2, inf, 0.1], [inf, inf, inf, inf]], dtype=torch.float64)
    masked = torch.isfinite(conf)
    th = Threshold(Threshold.Config(threshold=0.9)).commit(conf, masked, None)
    assert th.tolist() == [[True, False, True, False], [True, False, False, False], [False] * 4]
    # factor 1: rank r passes when (r + 1)(1 - c_r) <= 1: 2 x 0.05 yes, 3 x 0.08 yes, 4 x 0.5 no
    fa = Factor(Factor.Config(factor=1.0)).commit(conf, masked, None)
    assert fa.tolist() == [[True, False, True, False], [True, False, False, False], [False] * 4]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_threshold_above_one_is_the_exact_one_token_schedule(setup, temperature):
    """tau > 1: no confidence exceeds it, so each step commits exactly the most confident masked position of the
    block (the "at least one" rule) for block_length steps: LLaDA's schedule with steps == gen_length
    (num_transfer_schedule all ones). Same tokens; the threshold decoding skips the calls after a block is full."""
    tok, model, prompts = setup
    knobs = {"gen_length": 24, "steps": 24, "block_length": 8, "temperature": temperature}
    exact = run(model, tok, prompts, DecodeConfig(**knobs), batch_size=4)
    thr = run(model, tok, prompts, DecodeConfig(**knobs, strategy="threshold", threshold=1.01), batch_size=4)
    assert thr.tokens == exact.tokens and thr.forward_passes <= exact.forward_passes
    loose = run(model, tok, prompts, DecodeConfig(**knobs, strategy="threshold", threshold=0.0), batch_size=4)
    assert loose.forward_passes < exact.forward_passes  # tau 0 commits a block per call: the test can fail


def _canvas(tok, prompts, width_extra=16):
    p = prompts[0]
    x = torch.full((1, len(p) + width_extra), tok.mask_token_id if tok.mask_token_id is not None else 0)
    x[0, : len(p)] = torch.tensor(p)
    return x, len(p)


@torch.no_grad()
def _cached_vs_uncached(model, x, s, e, positions, mask_id, change):
    """Max |logit| difference over the block [s, e) between the cached forward and the model's own, right after
    the refresh (same canvas) and after `change` fills part of the block; for prefix and dual spans."""
    adapter = checked(model)
    kv = kv_forward(model, adapter, "dual")
    kw = {"position_ids": positions} if "gemma3" == kv.family else {}
    ref = adapter.logits(model, x, None, **kw)[:, s:e].float()
    full, cache = kv(x, positions, None, keep=(s, e))
    out = {"refresh": float((full.float() - ref).abs().max()), "scale": float(ref.abs().max())}
    y = x.clone()
    y[0, s : s + change] = (torch.arange(change) * 7 + 3) % 50
    ref_y = adapter.logits(model, y, None, **kw)[:, s:e].float()
    for mode, (lo, hi) in {"prefix": (s, x.shape[1]), "dual": (s, e)}.items():
        same = kv(x[:, lo:hi], positions[:, lo:hi], None, keep=(s - lo, e - lo), cache=cache, span=(lo, hi))
        moved = kv(y[:, lo:hi], positions[:, lo:hi], None, keep=(s - lo, e - lo), cache=cache, span=(lo, hi))
        out[mode] = float((same.float() - ref).abs().max())
        out[mode + "_after"] = float((moved.float() - ref_y).abs().max())
    return out


TOL = 1e-4  # relative to the largest logit: float32 rounding of two kernels (SDPA vs eager / the model's own)


def test_gemma3_cache_logits_equal_uncached_at_block_start_and_approximate_after(setup):
    tok, model, prompts = setup
    x, s = _canvas(tok, prompts)
    pos = torch.arange(x.shape[1])[None]
    d = _cached_vs_uncached(model, x, s, s + 8, pos, tok.mask_token_id, change=3)
    for k in ("refresh", "prefix", "dual"):  # same canvas: the cached K/V are what the full forward computes
        assert d[k] <= TOL * d["scale"], d
    # a changed block: prefix/suffix K/V are stale (2 layers: layer-2 keys saw the old block); not exact, and the
    # test would see it
    assert d["prefix_after"] > TOL * d["scale"] and d["dual_after"] > TOL * d["scale"]


@requires_remote_code
@pytest.mark.parametrize("layers", [1, 2])
def test_llada_cache_logits_equal_uncached_and_exact_after_changes_with_one_layer(tmp_path, layers):
    """Tiny LLaDA (real remote code, random weights). One layer: a cached column's K/V depend on its own token only
    (the layer's input is its embedding), so the cached forward stays exact after block tokens change; two layers:
    exact at the block start, an approximation after (its size printed, `benchmarks/perf/decoding.py` records it)."""
    model, tok = load_model(llada_folder(tmp_path / "m", "llada", layers=layers), causal=False, dtype=torch.float32)
    mask_id = tok.get_vocab()["<|mdm_mask|>"]
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=1, seed=1)]
    x = torch.full((1, len(prompts[0]) + 16), mask_id)
    x[0, : len(prompts[0])] = torch.tensor(prompts[0])
    s = len(prompts[0])
    d = _cached_vs_uncached(model, x, s, s + 8, torch.arange(x.shape[1])[None], mask_id, change=3)
    print(d)
    for k in ("refresh", "prefix", "dual"):
        assert d[k] <= TOL * d["scale"], d
    if layers == 1:
        assert d["prefix_after"] <= TOL * d["scale"] and d["dual_after"] <= TOL * d["scale"], d
    else:
        assert d["prefix_after"] > TOL * d["scale"], d


@requires_remote_code
def test_cached_decoding_runs_on_both_llada_variants_with_fewer_token_forwards(tmp_path):
    for variant in ("llada", "llada_hub"):
        model, tok = load_model(llada_folder(tmp_path / variant, variant), causal=False, dtype=torch.float32)
        mask_id = tok.get_vocab()["<|mdm_mask|>"]
        prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=3, seed=1)]
        knobs = {"gen_length": 16, "steps": 16, "block_length": 8}
        base = run(model, tok, prompts, DecodeConfig(**knobs), mask_id, vocab_size=len(tok))
        for cache in ("prefix", "dual"):
            out = run(model, tok, prompts, DecodeConfig(**knobs, cache=cache), mask_id, vocab_size=len(tok))
            assert out.forward_passes == base.forward_passes and out.token_forwards < base.token_forwards
            assert all(t < len(tok) for row in out.tokens for t in row)


def test_a_model_that_cannot_be_cached_is_refused_in_one_line(setup):
    """A Gemma3 wrapped in another module (its layers are not where the adapter-side forward reads them)."""
    tok, model, prompts = setup
    wrapped = EOSBias(model, tok.eos_token_id, start=10**6)
    with pytest.raises(ConfigError) as e:
        run(wrapped, tok, prompts, DecodeConfig(gen_length=8, steps=8, block_length=8, cache="dual"))
    msg = str(e.value)
    assert "EOSBias" in msg and "\n" not in msg and "cache: none" in msg, msg
    assert run(wrapped, tok, prompts, DecodeConfig(gen_length=8, steps=8, block_length=8)).tokens  # no cache: fine


def test_two_decodings_of_one_run_never_overwrite_each_other(setup, tmp_path):
    tok, model, _ = setup
    run_dir = save_run(tmp_path / "run", tok, model, {"task": "arith", "method": "standard", "seed": 1})
    fast = {"n": 6, "gen_length": 16, "steps": 16, "block_length": 8, "likelihood": False}
    evaluate_run(run_dir, fast)
    before = json.loads((run_dir / "record.json").read_text())
    paper = (run_dir / "eval_arith.jsonl").read_text()
    other = evaluate_run(run_dir, fast | {"decoding": {"strategy": "threshold", "threshold": 0.5, "cache": "dual"}})
    assert other["decoding_key"] == "threshold0.5+dual" and not other["metrics"]
    after = json.loads((run_dir / "record.json").read_text())
    assert after["metrics"] == before["metrics"] and after["metrics"]["decoding"] == "exact"
    assert after["eval"]["arith"] == before["eval"]["arith"]
    assert after["eval"]["arith@threshold0.5+dual"]["decoding"]["cache"] == "dual"
    assert (run_dir / "eval_arith.jsonl").read_text() == paper and (run_dir / "eval_arith@threshold0.5+dual.jsonl").is_file()
    evaluate_run(run_dir, fast)  # the paper decoding again: the other decoding's entry stays
    assert "arith@threshold0.5+dual" in json.loads((run_dir / "record.json").read_text())["eval"]
    mdm_main(["eval", str(run_dir), "--n", "6", "--gen-length", "16", "--steps", "16", "--block-length", "8",
              "--no-likelihood", "--decoding", "factor=1,prefix"])  # the CLI: a third key
    last = json.loads((run_dir / "record.json").read_text())
    assert {"arith", "arith@threshold0.5+dual", "arith@factor1+prefix"} <= set(last["eval"])
    assert last["metrics"] == before["metrics"]


def test_arithlong_has_long_answers_and_disjoint_splits():
    from mdm.data.tokenizer import build_tokenizer

    train, test = make_task("arithlong", "train", n=400), make_task("arithlong", "test", n=200)
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in test}
    tok = build_tokenizer([e["prompt"] + "\n" + e["response"] for e in train], vocab_size=512)
    assert min(len(tok(e["response"])["input_ids"]) for e in test) >= 64
    assert all(e["response"].endswith(f"#### {e['answer']}") for e in test)
    with pytest.raises(ConfigError):
        make_task("arithlong", "test", n=5, level=1)


def test_measured_calls_ratio_reads_the_benchmark_rows(tmp_path):
    from mdm.decoding import measured_calls_ratio

    rows = [{"task": "arith", "decoding": "threshold0.9+dual", "calls_ratio": 0.25},
            {"task": "tables", "decoding": "threshold0.9+dual", "calls_ratio": 0.5}]  # fmt: skip
    f = tmp_path / "decoding.json"
    f.write_text(json.dumps({"rows": rows}))
    knobs = {"strategy": "threshold", "threshold": 0.9, "cache": "dual"}
    assert measured_calls_ratio(knobs, "arith", path=f) == 0.25 and measured_calls_ratio(knobs, path=f) == 0.375
    assert measured_calls_ratio({"strategy": "factor", "factor": 1.0}, path=f) is None
    assert measured_calls_ratio(knobs, path=tmp_path / "missing.json") is None


@requires_mmada_code
def test_mmada_llm_is_cached_with_padded_batches(tmp_path):
    """MMaDA's LLM (LLaDA's blocks, `attention_bias` padding): the cached forward passes its check against the
    model's own forward on a padded batch, and a cached decoding of prompts of different lengths forwards fewer
    tokens."""
    model, tok = load_model(mmada_folder(tmp_path / "MMaDA-tiny"), causal=False, dtype=torch.float32, code_dir=MMADA_CODE)
    mask_id = mask_token_id_of(tok, model.config)
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task("arith", "test", n=4, seed=1)]
    assert len({len(p) for p in prompts}) > 1 and checked(model).can_pad
    knobs = {"gen_length": 16, "steps": 16, "block_length": 8}
    base = run(model, tok, prompts, DecodeConfig(**knobs), mask_id, vocab_size=len(tok))
    dual = run(model, tok, prompts, DecodeConfig(**knobs, cache="dual"), mask_id, vocab_size=len(tok))
    assert dual.forward_passes == base.forward_passes and dual.token_forwards < base.token_forwards
