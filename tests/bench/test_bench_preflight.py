"""The paper preset before any compute (mdm.bench.preflight, mdm.bench.lengths, micro_batch_size auto): offline and
without a GPU, `mdm bench --preset paper` stops in one go with one line per missing item and its fix; the token
lengths of a task come from its real rows and tokenizer when both are here (cached), else from stated statistics;
`--jobs N` launches get disjoint GPUs or are refused in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdm.bench import lengths, preflight
from mdm.errors import ConfigError
from mdm.train.config import DataConfig, ModelConfig
from tests.llada_fixture import llada_folder, requires_remote_code

ROOT = Path(__file__).resolve().parents[2]


def test_paper_bench_offline_stops_before_compute_with_one_line_per_missing_item(tmp_path):
    """The acceptance of issue 28 item 1, through the real CLI in a fresh process (imports included). Slow (~15 s
    alone, the spec's full validation included): it is the user's command, timed."""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MDM_CACHE": str(tmp_path),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mdm.cli", "bench", str(ROOT / "benchmarks" / "table1.yaml"),
                           "--preset", "paper", "--results", str(tmp_path / "runs")], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    took = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].endswith("--preset paper cannot start (129 runs to do); missing:")
    items = [line.strip() for line in lines[1:-1]]
    assert all(line.startswith("  ") for line in lines[1:-1]) and all(" -> " in line for line in items)
    starts = [line.split(" (")[0].split(":")[0] for line in items]
    assert starts == ["model GSAI-ML/LLaDA-8B-Instruct", "hitab", "dataset nvidia/OpenScienceReasoning-2",
                      "model Qwen/Qwen2.5-7B-Instruct", "model Qwen/Qwen3-8B-Base",
                      "model meta-llama/Llama-3.1-8B-Instruct", "DeepSpeed", "GPUs", "disk"][:len(starts)] or starts
    assert any(line.startswith("GPUs: the launch config") for line in items)
    assert "MDM_HITAB_DIR" in items[1] and "mdm prefetch" in items[0]
    assert lines[-1].startswith("fetch what the plan needs: make prefetch PRESET=paper")
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()  # nothing ran, nothing written
    assert took < 60, took  # < 30 s on a free 2-core machine (README); slack for a loaded CI


def test_jobs_get_disjoint_gpus_or_are_refused(monkeypatch):
    assert preflight.gpu_groups(4, 2, 8) == ["0,1,2,3", "4,5,6,7"]
    assert preflight.gpu_groups(8, 1, 8) == ["0,1,2,3,4,5,6,7"]
    assert preflight.gpu_groups(8, 2, 8) is None
    monkeypatch.setattr(preflight, "_visible_gpus", lambda: [79.6] * 8)
    assert preflight.gpu_slots(4, 2) == [("0,1,2,3", 29600), ("4,5,6,7", 29601)]  # own GPUs and rendezvous port
    with pytest.raises(ConfigError) as e:
        preflight.gpu_slots(8, 2)
    assert e.value.where == "--jobs" and e.value.problem.endswith("this machine has 8: use --jobs 1")


def test_preflight_machine_lines(monkeypatch, tmp_path):
    from mdm.bench.spec import Hardware, Launch, Preset

    preset = Preset(tasks={"gsm8k": None}, hardware=Hardware(name="H100", count=8),
                    launch=Launch(config_file=str(ROOT / "benchmarks" / "accelerate" / "ddp.yaml"), num_processes=8))
    monkeypatch.setattr(preflight, "_visible_gpus", lambda: [79.6] * 8)
    lines = preflight.machine_problems(preset, [], jobs=2, results=tmp_path, disk_bytes=1e18)
    jobs = next(line for line in lines if line.startswith("--jobs 2"))
    assert jobs.endswith("need 16 GPUs (each job its own); this machine has 8 -> --jobs 1")
    assert any(line.startswith("disk: ") for line in lines)
    monkeypatch.setattr(preflight, "_visible_gpus", lambda: [39.4] * 8)  # A100 40 GB where the plan says H100
    lines = preflight.machine_problems(preset, [], jobs=1, results=tmp_path, disk_bytes=None)
    assert any(line.startswith("GPU memory: the plan assumes 79.6 GiB") for line in lines)


def test_needs_of_the_paper_presets():
    from mdm.bench.spec import expand, load_spec

    t2 = load_spec(ROOT / "benchmarks" / "table2.yaml", preset="paper")
    names = {(n.kind, n.name) for n in preflight.needs(expand(t2, "paper", "/nonexistent"))}
    assert {("model", "Gen-Verse/MMaDA-8B-MixCoT"), ("model", "showlab/magvitv2"), ("clip", "ViT-B-32/openai"),
            ("stream", "jackyhate/text-to-image-2M")} <= names
    assert any(kind == "code" for kind, _ in names)  # MMaDA's code: model.code_dir or MDM_MMADA_CODE


def test_gsm8k_lengths_offline_are_approximate_and_stated_where_rows_are_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_CACHE", str(tmp_path))
    monkeypatch.delenv("MDM_HITAB_DIR", raising=False)
    model = ModelConfig(source="GSAI-ML/LLaDA-8B-Instruct", cache_dir=str(tmp_path))
    g = lengths.task_lengths(DataConfig(task="gsm8k", max_length=4096), model)
    assert g.n == 7473 and not g.exact and g.source.startswith("approx: 7473 rows")
    assert 100 < g.mean < g.p90 < g.p99 <= g.longest < 600  # GSM8K rows are short (the issue: <= ~500 tokens)
    assert g.padded_row(1) == g.mean and g.mean < g.padded_row(4) < g.p99
    h = lengths.task_lengths(DataConfig(task="hitab", max_length=4096), model)
    assert h.source.startswith("stated:") and h.longest == 4096 and not h.exact
    assert not list(tmp_path.rglob("*.json"))  # approximate numbers are never cached


@requires_remote_code
def test_lengths_with_a_real_tokenizer_are_exact_and_cached(tmp_path):
    from mdm.data.collate import tokenize_example
    from mdm.data.tasks import make_task

    folder = llada_folder(tmp_path / "llada", "llada_hub", hidden=16, layers=1, heads=2)
    model = ModelConfig(source=str(folder), cache_dir=str(tmp_path / "cache"))
    data = DataConfig(task="gsm8k", n_train=50, max_length=4096)
    stats = lengths.task_lengths(data, model)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    counts = sorted(len(tokenize_example(tok, ex, "gsm8k")["input_ids"]) for ex in make_task("gsm8k", "train", n=50))
    assert stats.exact and stats.n == 50 and stats.longest == counts[-1] and stats.mean == sum(counts) / 50
    cached = list((tmp_path / "cache" / "lengths").glob("gsm8k-*.json"))
    assert len(cached) == 1
    lengths._SEEN.clear()
    assert lengths.task_lengths(data, model) == stats  # read back from the cache
    shorter = lengths.task_lengths(DataConfig(task="gsm8k", n_train=50, max_length=counts[-1] - 1), model)
    assert shorter.longest < counts[-1]  # the key covers max_length (rows over it are dropped)


def test_auto_micro_batch_that_cannot_fit_is_one_line(tmp_path):
    import yaml

    from mdm.bench.spec import load_spec

    launch = str(ROOT / "benchmarks" / "accelerate" / "deepspeed_zero2.yaml")
    preset = {"tasks": {"gsm8k": {"n_train": 64, "max_length": 4096}}, "model": {"source": "GSAI-ML/LLaDA-8B-Instruct"},
              "training": {"global_batch_size": 32, "micro_batch_size": "auto", "gradient_checkpointing": True},
              "launch": {"config_file": launch, "num_processes": 8}, "hardware": {"name": "H100", "count": 8}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seeds": [1], "methods": ["standard", "mirror"],
                                    "presets": {"paper": preset}}))
    spec = load_spec(path, preset="paper")  # fits: 4 rows of GSM8K (its longest row) per GPU
    from mdm.bench.spec import expand

    assert {r.config.training.micro_batch_size for r in expand(spec, "paper", str(tmp_path))} == {4}
    with pytest.raises(ConfigError) as e:
        load_spec(path, ["hardware.memory_gib=30"], preset="paper")
    assert e.value.where.endswith("presets.paper.training.micro_batch_size")
    assert "micro_batch_size: auto: one row of" in e.value.problem and "over 90% of 30.0 GiB" in e.value.problem


def test_prefetch_downloads_every_hub_item_and_reports_the_rest(monkeypatch, capsys):
    """`mdm prefetch` (the download itself is huggingface_hub's snapshot_download, stood in for here: no network)."""
    import huggingface_hub

    from mdm.cli import main

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, repo_type="model": fetched.append((repo, repo_type)))
    monkeypatch.delenv("MDM_HITAB_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["prefetch", str(ROOT / "benchmarks" / "table1.yaml"), "--preset", "paper", "--results", "/nonexistent"])
    code, out = exit_.value.code, capsys.readouterr()
    assert fetched == [("GSAI-ML/LLaDA-8B-Instruct", "model"), ("Qwen/Qwen2.5-7B-Instruct", "model"),
                       ("Qwen/Qwen3-8B-Base", "model"), ("meta-llama/Llama-3.1-8B-Instruct", "model")]
    assert code == 1 and out.out.startswith("[1/6] model GSAI-ML/LLaDA-8B-Instruct (gsm8k/standard)")
    failed = out.err.splitlines()
    assert failed[0] == "mdm prefetch: 2 item(s) not fetched:"  # HiTab's folder, OpenScience's stream (offline)
    assert "MDM_HITAB_DIR" in failed[1] and "nvidia/OpenScienceReasoning-2" in failed[2]
