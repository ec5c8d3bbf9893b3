"""The `small` preset of benchmarks/table1.yaml (one GPU, dllm's Qwen3-0.6B A2D MDLM, real GSM8K): its dry-run
plan, per-run memory on 24 and 80 GB GPUs, and GPU-hours of training and evaluation, pinned by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mdm.bench import eval_cost, memory

ROOT = Path(__file__).resolve().parents[2]
QWEN3_06B = memory.KNOWN_ARCH["dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1"]


def test_qwen3_0_6b_shape_by_hand():
    # 28 blocks: q 1024x2048, k/v 1024x1024 each, o 2048x1024, gate/up/down 3 x 1024x3072, 2 norms; tied embedding
    block = 2 * 1024 * 2048 + 2 * 1024 * 1024 + 3 * 1024 * 3072 + 2 * 1024
    assert QWEN3_06B.params == 28 * block + 151936 * 1024 + 1024 == 596_042_752  # Qwen3-0.6B: "0.6B"
    # 16h: the two RMSNorms keep their fp32 input (measured on LLaDA's code: tests/bench/test_memory_measured.py)
    assert QWEN3_06B.layer_activation_bytes == 16 * 1024 + 4 * 2048 + 4 * 1024 + 8 * 3072 == 53248


def test_small_dry_run_plans_every_gsm8k_row_and_states_memory_and_gpu_hours(capsys, monkeypatch, tmp_path):
    import mdm.train.model
    from mdm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(mdm.train.model, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(ROOT)
    assert main(["bench", "benchmarks/table1.yaml", "--preset", "small", "--dry-run", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 36 and all(" gsm8k " in r for r in rows)  # 11 MDM rows + the ARM, 3 seeds each
    assert not any("syrm" in r for r in rows) and sum("arm:qwen3-0.6b" in r for r in rows) == 3
    hours = next(line for line in lines if line.startswith("GPU-hours"))
    assert hours.startswith("GPU-hours (H100, MFU 25%): training 1.3, evaluation 1.7 (47,484 prompts")
    table: dict[str, list] = {}  # row label -> its values in the MDM's table, then the ARM's
    for line in lines:
        if line.startswith("    "):
            table.setdefault(line[:60].strip(), []).extend(line[60:].split())
    # 18N + checkpointed layer inputs + the output layer's peak (every token masked) at 4 x 499 x views tokens: GSM8K's
    # longest row (mdm.bench.lengths, approximate offline: characters / 3.5 + the chat template), in GiB
    for views, total in ((1, 13.5), (2, 17.0)):
        tokens = 4 * 499 * views
        out = max(12 * 151936 * tokens + 12 * 1024 * tokens, 2 * 151936 * 1024 + 2 * 151936 * tokens + 14 * 1024 * tokens)
        by_hand = 18 * QWEN3_06B.params + tokens * 28 * 2 * 1024 + out
        assert round(by_hand / 2**30, 1) == total
    assert table["total, checkpointing on (this run)"] == ["13.5", "17.0", "13.5"]  # MDM x1, x2, ARM x1
    assert table["fits a 24 GB GPU (<= 90%)?"] == ["yes", "yes", "yes"]
    assert table["fits a 80 GB GPU (<= 90%)?"] == ["yes", "yes", "yes"]


def test_eval_cost_by_hand():
    preset = SimpleNamespace(tasks={"gsm8k": SimpleNamespace(avg_tokens=200)}, params=None,
                             hardware=SimpleNamespace(name="H100", peak_tflops=None, mfu=0.5))
    cfg = SimpleNamespace(model=SimpleNamespace(source="Qwen/Qwen3-0.6B"),
                          data=SimpleNamespace(max_length=640, n_train=1000, heldout_fraction=0.1),
                          eval=SimpleNamespace(accuracy={"n": 10, "gen_length": 128, "steps": 64}, heldout=True,
                                               t_grid=8))
    mdm_run = SimpleNamespace(config=cfg, task="gsm8k", arm=None)
    arm_run = SimpleNamespace(config=cfg, task="gsm8k", arm=SimpleNamespace(params=None))
    p = 0.596e9
    assert eval_cost.run_eval_cost(mdm_run, preset)["flops"] == pytest.approx(
        2 * p * 10 * 64 * (100 + 128) + 2 * p * 100 * 200 * 8)
    assert eval_cost.run_eval_cost(arm_run, preset)["flops"] == pytest.approx(2 * p * 10 * (100 + 128) + 2 * p * 100 * 200)
    plan = eval_cost.plan_eval_cost([mdm_run], preset)
    assert plan["hours"] == pytest.approx(plan["flops"] / (989e12 * 0.5) / 3600)
