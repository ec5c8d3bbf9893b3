"""Acceptance: `accelerate launch` with 2 CPU processes (gloo) gives the 1-process loss trajectory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mdm.train import read_log
from tests.numerics import approx, assert_same_trajectory
from tests.train.test_train import tiny_run, train

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.numerics
def test_two_processes_match_one_process(tmp_path):
    # 8-row global batches: 1 process x 4 micro-batches of 2 vs 2 processes x 2; StraTS strata and the EMA
    # control variate span the global batch; the 3rd step's micro-batches are uneven (n_train 30 -> 27 + 3).
    # the EMA with c = 1: a control variate whose offsets can be compared to a float tolerance (tests/numerics.py)
    method = {"preset": "strats+mirror+ema", "t_sampler": {"k": 3}, "control_variate": {"optimal": False}}
    over = dict(method=method, data={"task": "arith", "n_train": 30, "max_length": 128},
                training__micro_batch_size=2, training__max_steps=5,
                eval__batch_size=1)  # 3 held-out batches: rank 0 evaluates 2, rank 1 one and a weight-0 repeat
    one_result, one = train(tiny_run(tmp_path / "one", tmp_path / "cache", **over))
    cfg = tiny_run(tmp_path / "two", tmp_path / "cache", **over)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "benchmarks" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", str(free_port()),
                           "-m", "mdm.cli", "train", str(tmp_path / "run.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = read_log(tmp_path / "two")
    assert len(two) == len(one) == 5 and one_result["accumulation_steps"] == 4
    assert [e["batch_size"] for e in one] == [8, 8, 8, 3, 8]
    # keyed draws and counts identical; float32 losses and gradient norms to the numerics policy's tolerance
    assert_same_trajectory(two, one)
    import json

    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["num_processes"] == 2 and result["accumulation_steps"] == 2
    # the held-out loss is sharded over the 2 ranks (masks keyed by example): the 1-process value up to float sums
    assert one_result["n_heldout"] == result["n_heldout"] == 3
    assert result["metrics"]["heldout_loss"] == approx(one_result["metrics"]["heldout_loss"])
    assert result["metrics"]["heldout_examples"] == 3


@pytest.mark.slow
@pytest.mark.numerics
def test_the_ppots_pilot_is_sharded_over_two_processes(tmp_path):
    """P-POTS 'auto' under a 2-process launch: both ranks run the pilot (chunks split between them, equal forwards),
    and the summed table and its fit are the 1-process ones; separate caches, so neither reuses the other's."""
    import json

    method = {"preset": "ppots", "t_sampler": {"density": "auto"}}
    over = dict(method=method, data={"task": "arith", "n_train": 30, "max_length": 128},
                ppots_pilot={"a": 4, "b": 10, "c": 2, "restarts": 2, "token_budget": 1024},
                training__micro_batch_size=2, training__max_steps=2)
    one_result, one = train(tiny_run(tmp_path / "one", tmp_path / "cache1", **over))
    cfg = tiny_run(tmp_path / "two", tmp_path / "cache2", **over)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "benchmarks" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port",
                           str(free_port()), "-m", "mdm.cli", "train", str(tmp_path / "run.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((tmp_path / r / "ppots.json").read_text()) for r in ("one", "two"))
    assert a["pilot_cache"]["reused"] is False and b["pilot_cache"]["reused"] is False
    assert a["pilot"] == b["pilot"] and a["pilot"]["forward_rows"] == 4 * 10 * 2  # every row once, none twice
    for key in ("w", "g", "v"):
        assert b["target"][key] == [approx(x) for x in a["target"][key]]
    assert b["density"] == [approx(x, rel=1e-4) for x in a["density"]]
    assert_same_trajectory(read_log(tmp_path / "two"), one)


@pytest.mark.slow
def test_a_causal_model_is_refused_on_every_rank_of_a_launch(tmp_path):
    """In a launch the main process probes (other ranks may hold meta tensors under FSDP's RAM-efficient loading)
    and broadcasts its verdict: both ranks stop with the refusal, none hangs and none trains."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.adapters.test_llada import run_yaml
    from tests.llada_fixture import llada_tokenizer

    tok = llada_tokenizer()
    tok.add_special_tokens({"mask_token": "<|mdm_mask|>"})
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, mask_token_id=tok.mask_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "benchmarks" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port",
                           str(free_port()), "-m", "mdm.cli", "train", run_yaml(tmp_path, tmp_path / "llama")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    # counted in the whole stderr: the two ranks write at once, so their lines can land on one line
    refusal = "mdm train: error: model: LlamaForCausalLM"
    assert proc.returncode != 0 and proc.stderr.count(refusal) == 2, proc.stderr[-3000:]
    assert proc.stderr.count("refusing to train or decode it") == 2
    assert not (tmp_path / "run" / "train_log.jsonl").exists()
