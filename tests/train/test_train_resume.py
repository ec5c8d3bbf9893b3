"""Acceptance: a benchmark run killed with SIGKILL mid-training resumes on rerun and reproduces the
uninterrupted trajectory; finished records are not touched; a failed run does not stop the others."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mdm.train import RunConfig, Trainer, read_log
from mdm.train.trainer import RESULT
from tests.train.test_train import TINY_SIZE, trajectory

ROOT = Path(__file__).resolve().parents[2]


def spec(cache) -> dict:
    return {
        "name": "killtest",
        "seeds": [3],
        "methods": ["standard", {"name": "mirror+ema", "method": "mirror+ema"}],
        "presets": {"tiny": {
            "tasks": {"arith": {"n_train": 200, "max_length": 128}, "hitab": None},  # hitab: no checkout here
            "model": {"size": TINY_SIZE, "tokenizer_examples": 300, "cache_dir": str(cache)},
            "training": {"max_steps": 40, "global_batch_size": 16, "micro_batch_size": 8, "lr": 1e-3,
                         "checkpoint_every": 4, "threads": 1},
            "eval": {"t_grid": 2},
        }},
    }


def bench(path, results, *extra, wait=True):
    cmd = [sys.executable, "-m", "mdm.cli", "bench", str(path), "--results", str(results), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MDM_HITAB_DIR", None)  # so the hitab rows fail at their start
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_sigkill_then_rerun_resumes_the_same_trajectory(tmp_path):
    path, results = tmp_path / "spec.yaml", tmp_path / "runs"
    path.write_text(yaml.safe_dump(spec(tmp_path / "cache")))
    runs = results / "killtest"
    standard = runs / "arith" / "standard" / "seed3" / "record.json"
    mirror_dir = runs / "arith" / "mirror+ema" / "seed3"

    first = bench(path, results, "--only", "method=standard,task=arith")
    assert first.returncode == 0, first.stderr
    before = (standard.stat().st_mtime_ns, standard.read_bytes())
    assert json.loads(before[1])["status"] == "done"

    proc = bench(path, results, "--only", "task=arith", wait=False)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:  # kill between the 1st and 2nd checkpoint + 2 steps
        log = mirror_dir / "train_log.jsonl"
        n = len(log.read_text().splitlines()) if log.is_file() else 0
        if (mirror_dir / "checkpoints").is_dir() and n >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = n
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None and 6 <= killed_at < 40, f"not killed mid-training ({killed_at})"
    assert not (mirror_dir / "record.json").exists() and not (mirror_dir / "result.json").exists()

    second = bench(path, results, "--jobs", "2")  # the resumed run and the failing ones in 2 worker processes
    assert second.returncode == 1  # the hitab rows fail (no HiTab checkout): reported, not fatal
    assert "1 already done" in second.stdout and "arith/mirror+ema/seed3" in second.stdout
    assert (standard.stat().st_mtime_ns, standard.read_bytes()) == before  # finished record untouched

    record = json.loads((mirror_dir / "record.json").read_text())
    assert record["status"] == "done" and record["steps"] == 40
    assert len(record["resumed_from"]) == 1 and 4 <= record["resumed_from"][0] <= killed_at
    for key in ("config", "seed", "code_version", "hardware", "wall_time_s", "tokens", "passes", "metrics"):
        assert key in record, key
    assert record["hardware"]["cpu_capability"]  # float32 results depend on the kernels: tests/README.md
    assert record["metrics"]["heldout_loss"] > 0 and 16 * 40 < record["passes"] <= 2 * 16 * 40  # MIRROR: 2 views
    failed = json.loads((runs / "hitab" / "standard" / "seed3" / "record.json").read_text())
    assert failed["status"] == "failed" and "MDM_HITAB_DIR" in failed["reason"]

    resumed = read_log(mirror_dir)
    assert [e["step"] for e in resumed] == list(range(1, 41))
    assert record["passes"] == sum(e["passes"] for e in resumed)
    cfg = RunConfig.model_validate({**record["config"], "output_dir": str(tmp_path / "uninterrupted")})
    Trainer(cfg).train()
    assert trajectory(resumed) == trajectory(read_log(tmp_path / "uninterrupted"))


def test_a_spec_edited_after_runs_finished_is_one_clear_error_then_rerun_stale_moves_them_aside(tmp_path):
    path, results = tmp_path / "spec.yaml", tmp_path / "runs"
    data = spec(tmp_path / "cache")
    data["presets"]["tiny"]["training"]["max_steps"] = 4
    path.write_text(yaml.safe_dump(data))
    run_dir = results / "killtest" / "arith" / "standard" / "seed3"
    assert bench(path, results, "--only", "method=standard,task=arith").returncode == 0
    first = (run_dir / "record.json").read_bytes()

    data["presets"]["tiny"]["training"]["lr"] = 2e-3
    path.write_text(yaml.safe_dump(data))
    refused = bench(path, results, "--only", "method=standard,task=arith")
    assert refused.returncode == 2 and "training.lr" in refused.stderr and "--rerun-stale" in refused.stderr
    assert (run_dir / "record.json").read_bytes() == first  # nothing touched

    rerun = bench(path, results, "--only", "method=standard,task=arith", "--rerun-stale")
    assert rerun.returncode == 0, rerun.stderr
    assert (run_dir.with_name("seed3.stale-1") / "record.json").read_bytes() == first  # kept, not deleted
    assert json.loads((run_dir / "record.json").read_text())["config"]["training"]["lr"] == 2e-3
    from mdm.report.records import read_records

    assert len(read_records(results / "killtest")) == 1  # the set-aside run is not reported


def train_cli(config, *extra, wait=True):
    cmd = [sys.executable, "-m", "mdm.cli", "train", str(config), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def kill_at(config, run_dir, step) -> int:
    """Start `mdm train`, SIGKILL it once its log has `step` lines; returns the lines seen at the kill."""
    proc = train_cli(config, wait=False)
    log, deadline = run_dir / "train_log.jsonl", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        n = len(log.read_text().splitlines()) if log.is_file() else 0
        if n >= step:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return n
        time.sleep(0.005)
    raise AssertionError(f"not killed at step {step}: {proc.poll()=}, {proc.communicate()[1][-2000:]}")


def test_sigkill_of_mdm_train_with_default_settings_then_rerun_logs_each_step_once(tmp_path):
    """Default settings (checkpoint_every: auto = every 5 of 20 steps): a kill before the first checkpoint
    restarts from step 0 with an empty log; a kill after one resumes from it. Random steps, seed in the message."""
    import random

    from tests.train.test_train import tiny_run

    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    cfg = tiny_run(run_dir, tmp_path / "cache", training__max_steps=20)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert "checkpoint_every" not in cfg["training"]

    early = kill_at(config, run_dir, rng.randint(1, 3))
    assert not (run_dir / "checkpoints").is_dir(), f"seed {seed}: killed at {early}, after the first checkpoint"
    late = kill_at(config, run_dir, rng.randint(6, 18))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1 and not (run_dir / RESULT).exists(), f"seed {seed}: {ckpts}"  # keep_checkpoints: 1
    resumed_at = int(ckpts[0].removeprefix("step_"))
    assert 5 <= resumed_at <= late, f"seed {seed}"

    rerun = train_cli(config)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads((run_dir / RESULT).read_text())
    assert result["resumed_from"] == [resumed_at], f"seed {seed}: killed at {early} and {late}"
    log = read_log(run_dir)
    assert [e["step"] for e in log] == list(range(1, 21)), f"seed {seed}: killed at {early} and {late}"

    unbroken = tmp_path / "unbroken"
    assert train_cli(config, "--output-dir", str(unbroken)).returncode == 0
    assert trajectory(log) == trajectory(read_log(unbroken)), f"seed {seed}: killed at {early} and {late}"
    assert result["metrics"] == json.loads((unbroken / RESULT).read_text())["metrics"]


def default_signals() -> None:
    """In the child: SIGINT and SIGTERM as in a terminal's foreground job, whatever this test process inherited (a
    test runner's worker or a background job may ignore SIGINT, and an ignored signal stays ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interrupt_when_training(path, results, runs, *extra, group=True, sig=signal.SIGINT, after=None):
    """Start `mdm bench`, signal it once a run under `runs` has logged 17 steps (after its step-15 checkpoint) (`group`: the whole process group, as Ctrl-C in
    a terminal does; else the main process alone). Returns (exit code, stderr, seconds from the signal to the exit)."""
    cmd = [sys.executable, "-m", "mdm.cli", "bench", str(path), "--results", str(results), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_signals)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        logs = [p for d in (after or [runs]) for p in d.rglob("train_log.jsonl")]
        if len(logs) >= len(after or [runs]) and any(len(p.read_text().splitlines()) >= 17 for p in logs):
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    sent = time.time()
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    took = time.time() - sent
    for _ in range(50):  # no worker outlives the main process (its session holds every process it started)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"processes of `mdm bench` still ran 5 s after it exited: {err[-2000:]}")
    return proc.returncode, err, took


def test_ctrl_c_and_sigterm_of_mdm_bench_stop_at_once_record_interrupted_and_a_rerun_resumes(tmp_path):
    data = spec(tmp_path / "cache")
    data["methods"] = ["standard", "mirror", "strats", "ema"]
    data["presets"]["tiny"]["tasks"] = {"arith": {"n_train": 200, "max_length": 128}}
    data["presets"]["tiny"]["training"].update(max_steps=60, checkpoint_every="auto")  # every 15 steps
    path, results = tmp_path / "spec.yaml", tmp_path / "runs"
    path.write_text(yaml.safe_dump(data))
    runs = results / "killtest"

    def records():
        return {p.parent.parent.name: json.loads(p.read_text()) for p in runs.rglob("record.json")}

    code, err, took = interrupt_when_training(path, results, runs, "--jobs", "2")  # Ctrl-C: all processes get SIGINT
    assert code == 130 and took < 10, (code, took, err[-3000:])
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("mdm bench: interrupted by SIGINT: "), \
        err[-3000:]
    first = records()
    assert first and all(r["status"] == "interrupted" for r in first.values()), first  # never `failed`
    assert len(first) <= 2 and all("interrupted by SIGINT" in r["reason"] for r in first.values())

    fresh = [m for m in data["methods"] if not (runs / "arith" / m / "seed3" / "train_log.jsonl").exists()][:2]
    # SIGTERM to the main process alone, with its two workers busy: they stop too, none outlives the main process
    code, err, took = interrupt_when_training(path, results, runs / "arith", "--jobs", "2",
                                              "--only", ",".join(f"method={m}" for m in fresh),
                                              group=False, sig=signal.SIGTERM, after=[runs / "arith" / m for m in fresh])
    assert code == 130 and took < 10 and "Traceback" not in err, (code, took, err[-3000:])
    *progress, last = err.strip().splitlines()  # off a TTY the running runs print plain progress lines (mdm.progress)
    assert last.startswith("mdm bench: interrupted by SIGTERM: "), err
    assert all(re.match(rf"killtest/arith/({'|'.join(fresh)})/seed3: step \d+/60 ", line) for line in progress), err
    assert any(records()[m]["status"] == "interrupted" and "SIGTERM" in records()[m]["reason"] for m in fresh)

    rerun = bench(path, results, "--jobs", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = records()
    assert sorted(final) == ["ema", "mirror", "standard", "strats"] and all(r["status"] == "done" for r in final.values())
    for method in final:
        log = read_log(runs / "arith" / method / "seed3")
        assert [e["step"] for e in log] == list(range(1, 61)), method
    assert any(final[m]["resumed_from"] == [15] for m in fresh) and any(final[m]["resumed_from"] == [15] for m in first)


def test_a_bench_that_ignores_sigint_keeps_every_worker_running_through_a_group_sigint(tmp_path):
    """`mdm bench ... &` (SIGINT ignored, as in a shell's background job): a SIGINT to the whole group stops no
    worker either, so the benchmark finishes whole instead of half its runs being recorded 'interrupted'."""
    data = spec(tmp_path / "cache")
    data["presets"]["tiny"]["tasks"] = {"arith": {"n_train": 200, "max_length": 128}}
    data["presets"]["tiny"]["training"].update(max_steps=24, checkpoint_every=8)
    path, results = tmp_path / "spec.yaml", tmp_path / "runs"
    path.write_text(yaml.safe_dump(data))

    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    cmd = [sys.executable, "-m", "mdm.cli", "bench", str(path), "--results", str(results), "--jobs", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=ignore_sigint)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        logs = list((results / "killtest").rglob("train_log.jsonl"))
        if len(logs) == 2 and all(len(p.read_text().splitlines()) >= 3 for p in logs):
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    records = [json.loads(p.read_text()) for p in (results / "killtest").rglob("record.json")]
    assert sorted(r["status"] for r in records) == ["done", "done"] and "2 done, 0 failed" in out
