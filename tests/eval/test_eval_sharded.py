"""Acceptance (issue 28, item 3): `mdm eval` under `accelerate launch` with 2 CPU processes (gloo) decodes, scores
and measures the held-out likelihood of every prompt exactly as one process does; rank 0 alone writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mdm.cli import main as mdm_main
from tests.eval.test_eval_fixtures import save_run, sharp_model, tiny_tokenizer
from tests.train.test_train_distributed import free_port

ROOT = Path(__file__).resolve().parents[2]
RECORD = {"task": "arith", "method": "standard", "seed": 42, "status": "done"}
# 7 prompts in batches of 2: 4 batches, rank 0 decodes batches 0 and 2, rank 1 batches 1 and 3 (the last one short);
# the held-out likelihood's 4 batches likewise
ARGS = ["--n", "7", "--gen-length", "8", "--steps", "8", "--block-length", "4", "--batch-size", "2", "--t-grid", "2"]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_arith.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two launched processes each importing torch + transformers: ~15 s on 2 cores
def test_two_processes_give_the_one_process_outputs(tmp_path):
    tok = tiny_tokenizer()
    one = save_run(tmp_path / "one", tok, sharp_model(tok), RECORD)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    assert mdm_main(["eval", str(one), *ARGS]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"n": 7, "decoding": {"gen_length": 8, "steps": 8, "block_length": 4},
                                    "batch_size": 2, "t_grid": 2}))
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "benchmarks" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port",
                           str(free_port()), "-m", "mdm.cli", "eval", str(two), "--settings", str(settings)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("arith (mdm, n=7)") == 1  # rank 0 reports, rank 1 is silent
    a, b = _rows(one), _rows(two)
    assert len(a) == len(b) == 7
    for ra, rb in zip(a, b):  # greedy decoding of the same batches: identical tokens, text, steps and bounds
        assert (ra["prediction"], ra["generated_tokens"], ra["steps_run"], ra["scores"]) == \
            (rb["prediction"], rb["generated_tokens"], rb["steps_run"], rb["scores"])
        assert ra["heldout_nll"] == rb["heldout_nll"]
    ea = json.loads((one / "record.json").read_text())["eval"]["arith"]
    eb = json.loads((two / "record.json").read_text())["eval"]["arith"]
    assert ea["scores"] == eb["scores"] and eb["processes"] == 2 and "processes" not in ea
    assert ea["likelihood"]["nll_per_token"] == eb["likelihood"]["nll_per_token"]  # summed in the same order
    assert ea["likelihood"]["n_sequences"] == eb["likelihood"]["n_sequences"] == 7
    assert ea["generation"]["forward_passes"] == eb["generation"]["forward_passes"]
