"""`mdm bench --dry-run` memory arithmetic (mdm.bench.memory): every number pinned by hand for a tiny shape and
the real LLaDA-8B shape; the shipped accelerate configs are read; a bad one is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdm.bench import memory
from mdm.bench.estimate import KNOWN_PARAMS, tiny_params
from mdm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = memory.Arch(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=192, vocab=512, tied=True)
LLADA = memory.KNOWN_ARCH["GSAI-ML/LLaDA-8B-Instruct"]


def test_tiny_shape_by_hand():
    # q 64x64, k/v 64x32 each, o 64x64, gate/up/down 3x64x192, 2 norms of 64
    assert TINY.block_params == 4096 + 2 * 2048 + 4096 + 3 * 12288 + 128 == 49280
    assert TINY.root_params == 512 * 64 + 64 == 32832  # tied: one embedding matrix, + final norm
    assert TINY.params == 2 * 49280 + 32832 == 131392
    # Gemma3's two extra norms per layer and its q/k norms are what the LLaMA-style shape leaves out
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                intermediate_size=192)
    assert tiny_params(size, 512) - TINY.params == 2 * (2 * 64 + 2 * 16) == 320
    # A = 16h + 4hq + 4hkv + 8f (the two RMSNorms keep their input in fp32 too: 8h beyond Korthikanti's count)
    assert TINY.layer_activation_bytes == 1024 + 256 + 128 + 1536 == 2944
    # output layer: max(12V per masked token + 12h per token, 2Vh + 2V per token + 14h per token)
    assert TINY.output_peak(10, 10) == max(12 * 512 * 10 + 12 * 64 * 10, 2 * 512 * 64 + 2 * 512 * 10 + 14 * 64 * 10)
    assert TINY.output_peak(10, 10) == 84736 and TINY.output_peak(100, 100) == 691200  # the masked tokens dominate
    assert memory.activations(TINY, 10, checkpointing=True) == 10 * 2 * 2 * 64 == 2560  # layer inputs only
    assert memory.activations(TINY, 10, checkpointing=False) == 10 * 2 * 2944 == 58880
    assert memory.step_peak(TINY, 10, 10, True) == 2560 + max(84736, 10 * 2944) == 87296
    assert memory.step_peak(TINY, 10, 10, False) == 58880 + 84736


def test_model_states_by_backend():
    n = TINY.params
    assert memory.model_states(TINY, memory.LaunchPlan("zero2", 4)) == [
        ("weights: bf16, replicated (2 B/param)", 2 * n),
        ("gradients: bf16 partition (2 B/param / W)", 2 * n / 4),
        ("optimizer: fp32 master + m + v (12 B/param / W)", 12 * n / 4)]
    ddp = memory.model_states(TINY, memory.LaunchPlan("ddp", 2))
    assert [b for _, b in ddp] == [6 * n, 4 * n, 4 * n, 8 * n] and sum(b for _, b in ddp) == 22 * n == 2890624
    assert sum(b for _, b in memory.model_states(TINY, memory.LaunchPlan("single", 1))) == 18 * n
    fsdp = memory.model_states(TINY, memory.LaunchPlan("fsdp", 4))
    assert [b for _, b in fsdp] == [n, 4 * (32832 + 2 * 49280), n, 2 * n]  # 4N/W, gathered, 4N/W, 8N/W
    assert memory.checkpoint_bytes(n, memory.LaunchPlan("zero2", 8)) == 14 * n
    assert memory.checkpoint_bytes(n, memory.LaunchPlan("fsdp", 8)) == 12 * n


def test_llada_8b_numbers():
    assert LLADA.params == 2 * 126464 * 4096 + 32 * (4 * 4096**2 + 3 * 4096 * 12288 + 2 * 4096) + 4096 == 8015581184
    assert LLADA.layer_activation_bytes == 196608  # 192 KiB per token per layer (measured: test_memory_measured)
    # GSM8K's rows are at most ~500 tokens: the old worst case (4 x max_length 4096, 87.8 GiB for MIRROR) is gone
    gsm8k = memory.Column("gsm8k", 512, 4, 1)
    mirror = memory.Column("gsm8k", 512, 4, 2)
    hitab = memory.Column("hitab", 4096, 4, 2)
    assert (gsm8k.tokens, mirror.tokens, mirror.label, mirror.masked) == (2048, 4096, "gsm8k x2", 4096)
    assert memory.activations(LLADA, gsm8k.tokens, True) == 2048 * 32 * 8192 == 536870912
    assert LLADA.output_peak(2048, 2048) == 12 * 126464 * 2048 + 12 * 4096 * 2048 == 3208642560
    lines, warnings = memory.memory_table(LLADA, memory.LaunchPlan("zero2", 8), [gsm8k, mirror, hitab], True, 79.6)
    total = next(line for line in lines if line.strip().startswith("total, checkpointing on"))
    # 2N + 2N/8 + 12N/8 + layer inputs + output layer, in GiB
    n = LLADA.params
    expect = (2 * n + 14 * n / 8 + 536870912 + 3208642560) / 2**30
    assert total.split()[-3] == f"{expect:.1f}" == "31.5"
    assert total.split()[-2:] == ["35.0", "83.8"]
    assert lines[-1].split()[-3:] == ["yes", "yes", "NO"]
    assert warnings == ["WARNING: DeepSpeed ZeRO-2, 8 processes does not fit 79.6 GiB per GPU for hitab x2 "
                        "(worst case 83.8 GiB)"]


def test_known_shapes_match_known_parameter_counts():
    for source, arch in memory.KNOWN_ARCH.items():
        assert abs(arch.params / KNOWN_PARAMS[source] - 1) < 0.005, source


def test_views_of_method_cost():
    assert [memory.views_of(c) for c in (1.0, 1.9, 2.0, 3.0)] == [1, 2, 2, 3]


@pytest.mark.parametrize("name, backend", [("ddp", "ddp"), ("fsdp", "fsdp"), ("deepspeed_zero2", "zero2"),
                                           ("cpu_2proc", "ddp")])
def test_shipped_launch_configs_are_read(name, backend):
    plan = memory.read_launch(ROOT / "benchmarks" / "accelerate" / f"{name}.yaml")
    assert plan.backend == backend and plan.processes == (2 if name == "cpu_2proc" else 8)
    assert memory.read_launch(ROOT / "benchmarks" / "accelerate" / f"{name}.yaml", 4).processes == 4


@pytest.mark.parametrize("text, where, words", [
    ("distributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 3}\n", "deepspeed_config.zero_stage",
     "knows ZeRO-2 only; got 3"),
    ("distributed_type: FSDP\nfsdp_config: {fsdp_sharding_strategy: SHARD_GRAD_OP}\n",
     "fsdp_config.fsdp_sharding_strategy", "knows FULL_SHARD only"),
    ("distributed_type: TPU\n", "distributed_type", "unknown 'TPU'"),
])
def test_unknown_launch_is_one_line(tmp_path, text, where, words):
    path = tmp_path / "a.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        memory.read_launch(path)
    assert e.value.where == f"{path}: {where}" and words in e.value.problem


def _dry_run(capsys, tmp_path, *extra):
    from mdm.cli import main

    code = main(["bench", str(ROOT / "benchmarks" / "table1.yaml"), "--preset", "paper", "--dry-run", "--results",
                 str(tmp_path), "--only", "task=gsm8k,method=standard,method=mirror,family=mdm", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out.splitlines()


def test_paper_dry_run_prints_the_memory_table_offline(capsys, monkeypatch, tmp_path):
    import mdm.train.model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(mdm.train.model, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(tmp_path)  # the preset's launch path does not depend on the working directory
    lines = _dry_run(capsys, tmp_path)
    start = next(i for i, line in enumerate(lines) if line.startswith("per-GPU memory"))
    assert lines[start].startswith("per-GPU memory (DeepSpeed ZeRO-2 (") and "8 processes; H100, 79.6 GiB" in lines[start]
    assert lines[start + 1].endswith("micro-batch: gsm8k x1 4, gsm8k x2 4")  # micro_batch_size auto: 4 fits
    table = {line[:60].strip(): line[60:].split() for line in lines[start + 3:start + 13]}
    assert lines[start + 2].split()[-4:] == ["gsm8k", "x1", "gsm8k", "x2"]
    assert table["weights: bf16, replicated (2 B/param)"] == ["14.9", "14.9"]
    # every MDM row EOS-padded to the task's canvas, data.pad_to 1,024 (mdm.bench.lengths.run_lengths), not
    # max_length 4,096
    assert table["activations, checkpointing on (layer inputs)"] == ["1.0", "2.0"]  # MIRROR: 2 views
    assert table["total, checkpointing on (this run)"] == ["35.0", "41.9"]
    assert table["fits 79.6 GiB (<= 90%)?"] == ["yes", "yes"]
    ckpt = next(line for line in lines if line.strip().startswith("checkpoints (model + optimizer"))
    assert ckpt.strip() == "checkpoints (model + optimizer, 112 GB each; every 30 min of training, keep 1): per run " \
        "in the cost plan"  # the wall-clock policy (training.checkpoint_minutes)
    policy = next(line for line in lines if line.startswith("  checkpoints gsm8k"))
    assert "every 30 min of training" in policy and "0 per run of 14min training" in policy
    assert not [line for line in lines if line.startswith("WARNING")]


def test_dry_run_launch_option_ddp_does_not_fit(capsys, tmp_path):
    lines = _dry_run(capsys, tmp_path, "--launch", str(ROOT / "benchmarks" / "accelerate" / "ddp.yaml"))
    assert any(line.startswith("per-GPU memory (DDP (") for line in lines)
    total = next(line for line in lines if line.strip().startswith("total, checkpointing on"))
    tokens = 4 * 1024  # micro-batch 4 (chosen for the preset's ZeRO-2) x GSM8K's canvas (pad_to)
    one_view = 22 * LLADA.params + memory.step_peak(LLADA, tokens, tokens, True)  # 22N + the step
    two_views = 22 * LLADA.params + memory.step_peak(LLADA, 2 * tokens, 2 * tokens, True)
    assert total.split()[-2:] == [f"{one_view / 2**30:.1f}", f"{two_views / 2**30:.1f}"] == ["171.2", "178.2"]
    assert any(line.startswith("WARNING: DDP (") and "gsm8k x1, gsm8k x2" in line for line in lines)


def test_checkpoint_disk_by_hand():
    # gsm8k paper run: 1055 steps; one checkpoint at steps 500 and 1000 (none at the last step), keep 1
    d = memory.checkpoint_disk(LLADA.params, memory.LaunchPlan("zero2", 8), 1055, 500, 1)
    assert d == {"size": 14 * 8015581184, "count": 2, "written": 2 * 14 * 8015581184, "peak": 2 * 14 * 8015581184}
    assert memory.checkpoint_disk(1e9, memory.LaunchPlan("fsdp", 8), 1000, 100, 2) == \
        {"size": 12e9, "count": 9, "written": 108e9, "peak": 36e9}  # 100..900; 3 on disk while one is written
    assert memory.checkpoint_disk(1e9, memory.LaunchPlan("fsdp", 8), 1000, None, 2)["written"] == 0


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_paper_presets_write_under_a_terabyte_of_checkpoints(name, capsys, tmp_path):
    from mdm.cli import main

    assert main(["bench", str(ROOT / "benchmarks" / f"{name}.yaml"), "--preset", "paper", "--dry-run", "--results",
                 str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("checkpoints (model + optimizer") for line in lines)
    assert not [line for line in lines if line.startswith("WARNING: checkpoints")]


def test_dry_run_warns_about_terabyte_checkpoints(capsys, tmp_path):
    lines = _dry_run(capsys, tmp_path, "--set", "training.checkpoint_every=100")
    ckpt = next(line for line in lines if line.strip().startswith("checkpoints (model + optimizer"))
    assert ckpt.strip() == "checkpoints (model + optimizer, 112 GB each; every 100 steps, keep 1): gsm8k 10 written " \
        "(1122 GB), disk 224 GB"
    assert "WARNING: checkpoints write over 1 TB per run for gsm8k with GSAI-ML/LLaDA-8B-Instruct; raise " \
        "training.checkpoint_every" in lines


def test_device_memory_of_the_named_gpu():
    from mdm.bench.spec import Hardware

    assert memory.device_gib(Hardware(name="H100")) == 81559 / 1024  # nvidia-smi's 81,559 MiB: 79.6 GiB
    assert round(memory.device_gib(Hardware(name="H200")), 1) == 140.4
    assert memory.device_gib(Hardware(name="MI300X")) is None
    assert memory.device_gib(Hardware(name="MI300X", memory_gib=192)) == 192.0
    assert memory.device_gib(None) is None


def test_snapshot_disk_by_hand():
    """Model-only snapshots: 2 B/param under DeepSpeed (bf16 module), 4 otherwise; one every N steps before the last."""
    d = memory.snapshot_disk(1e9, memory.LaunchPlan("zero2", 8), 1055, 500, 1)
    assert d == {"size": 2e9, "count": 2, "written": 4e9, "peak": 4e9}  # keep 1: the next is written first
    assert memory.snapshot_disk(1e9, memory.LaunchPlan("fsdp", 8), 1000, 100, None) == \
        {"size": 4e9, "count": 9, "written": 36e9, "peak": 36e9}
