"""Acceptance of `mdm bench --executor slurm` against a real SLURM (the one-node cluster of .ci/slurm/cluster.sh),
through the real CLI, on a 4-run subset of the tiny Table 1 (few steps, few prompts):
- the 4 runs submitted with --executor slurm reach done records whose metrics (held-out loss, train loss, score)
  equal the local executor's on this machine; `--status` shows them queued (held), running and done with job ids;
- one of them, sent the warning signal mid-training, checkpoints, requeues itself and resumes: its record equals
  the unbroken local run's and every step is logged once;
- two submissions started at once submit each run once (the second finds both queued);
- a run whose config is bad is recorded failed and its job is not requeued.
Skipped (with the reason) where no SLURM controller answers; under CI=true that is a failure instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdm.cli import main

ROOT = Path(__file__).resolve().parents[2]
TABLE1 = str(ROOT / "benchmarks" / "table1.yaml")
ONLY = ["--only", "task=arith,seed=42,method=standard,method=mirror,method=ema,method=arm-tiny"]
SETS = [f"--set={s}" for s in (
    "tasks.arith.n_train=96", "tasks.arith.model.pretrain.max_steps=10", "tasks.arith.model.pretrain.n_examples=300",
    "model.tokenizer_examples=300", "tasks.arith.training.max_steps=40", "eval.accuracy.n=8",
    "training.checkpoint_every=100")]  # no periodic checkpoint: a resume starts from the signal's checkpoint
SLURM = ["--executor", "slurm", "--slurm", "cpus_per_task=1", "--slurm", "time=15"]


def slurm_problem() -> str | None:
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        return "sbatch/squeue not installed (start one: sudo .ci/slurm/cluster.sh install && sudo .ci/slurm/cluster.sh start)"
    out = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return f"no SLURM controller answers ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})"
    return None


PROBLEM = slurm_problem()
if PROBLEM and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI=true but SLURM is not running: {PROBLEM} (.ci/run starts it with .ci/slurm/cluster.sh)")
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=f"SLURM: {PROBLEM}"), pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "MDM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


def mdm(env, results, *args, check=True, wait=True):
    cmd = [sys.executable, "-m", "mdm.cli", "bench", TABLE1, "--results", str(results), *SETS, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert not check or out.returncode == 0, out.stdout + out.stderr
    return out


def status(results, *only) -> tuple[dict, str]:
    """method -> (state, job id) from `mdm bench --status` (in this process: quick enough to catch a running run)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["bench", TABLE1, "--results", str(results), *SETS, *(only or ONLY), "--status"]) == 0
    text = out.getvalue()
    rows = [(line[2:14].strip(), *line[14:].split()[:3]) for line in text.splitlines()
            if line.startswith("  ") and " arith " in line]
    return {method: (state, job) for state, job, _, method in rows}, text


def records(results) -> dict:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in (Path(results) / "table1").rglob("record.json")}


def jobs(results) -> dict:
    return {Path(k).parent.name: v for k, v in
            json.loads((Path(results) / "table1" / ".slurm" / "jobs.json").read_text()).items()}


def wait_for(predicate, timeout, what, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def squeue_of(job_id: str) -> str:
    return subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T", "--job", job_id.split("_")[0]],
                          capture_output=True, text=True).stdout


def train_log(results, method) -> list[dict]:
    log = Path(results) / "table1" / "arith" / method / "seed42" / "train_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def log_steps(results, method) -> list[int]:
    return [e["step"] for e in train_log(results, method)]


def losses(results, method) -> list[float]:
    return [e["loss"] for e in train_log(results, method)]


def test_four_runs_on_slurm_equal_local_with_status_and_preempted_resumes(env, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    mdm(env, local, *ONLY, "--jobs", "2")  # the local executor (also builds the cached bases the jobs share)
    want = records(local)
    assert sorted(want) == ["arm-tiny", "ema", "mirror", "standard"] and all(r["status"] == "done" for r in want.values())

    out = mdm(env, cluster, *ONLY, *SLURM, "--slurm", "sbatch.hold=true").stdout  # held: queued until released
    assert "4 runs selected, 0 already done, 0 queued or running, 4 to submit" in out, out
    ids = {m: j["job_id"] for m, j in jobs(cluster).items()}
    states, text = status(cluster)
    print(text)
    assert states == {m: ("queued", ids[m]) for m in ids}, text
    subprocess.run(["scontrol", "release", ids["standard"].split("_")[0]], check=True)  # the whole array

    # array tasks start in order, two at a time on 2 CPUs: standard and mirror run, ema and arm-tiny wait
    wait_for(lambda: len(log_steps(cluster, "mirror")) >= 3, 240, "mirror's 3rd step", every=0.05)
    states, text = status(cluster)
    print(text)
    assert states["mirror"] == ("running", ids["mirror"]) and "queued" in {s for s, _ in states.values()}, text
    assert all(job == ids[m] for m, (_, job) in states.items()), text

    # SLURM requeues mirror (SIGTERM: checkpoint at the next step; the job comes back with the same id)
    wait_for(lambda: len(log_steps(cluster, "mirror")) >= 5, 240, "mirror's 5th step", every=0.05)
    subprocess.run(["scontrol", "requeue", ids["mirror"]], check=True, timeout=30)
    # the warning signal a time limit sends (USR1@120), here by hand: arm-tiny checkpoints and requeues itself
    # (the last task: no task of the array is pending any more, else this scancel of 22.05 retries)
    wait_for(lambda: len(log_steps(cluster, "arm-tiny")) >= 5, 300, "arm-tiny's 5th step", every=0.05)
    subprocess.run(["scancel", "--signal=USR1", ids["arm-tiny"]], check=True, timeout=30)

    wait_for(lambda: sum(r["status"] == "done" for r in records(cluster).values()) == 4, 420, "4 done records",
             every=1)
    states, text = status(cluster)
    print(text)
    assert states == {m: ("done", ids[m]) for m in ids} and "totals: 4 done, 0 running, 0 queued, 0 failed" in text
    got = records(cluster)
    for method in want:  # the same numbers as the local executor's, preempted or not
        assert got[method]["metrics"] == want[method]["metrics"], method
        assert got[method]["steps"] == want[method]["steps"] == 40
        assert log_steps(cluster, method) == list(range(1, 41)), method  # each step logged once
        assert losses(cluster, method) == losses(local, method), method
    for method, how in (("mirror", "SIGTERM"), ("arm-tiny", "SIGUSR1")):
        resumed = got[method]["resumed_from"]
        assert len(resumed) == 1 and 5 <= resumed[0] < 40, (method, resumed)  # the checkpoint written on the signal
        show = subprocess.run(["scontrol", "show", "job", ids[method]], capture_output=True, text=True).stdout
        assert "Restarts=1" in show, show
        assert f"{how} received" in Path(jobs(cluster)[method]["log"]).read_text(), method
    assert "stopped by SIGUSR1; requeueing job" in Path(jobs(cluster)["arm-tiny"]["log"]).read_text()
    for method in ("standard", "ema"):
        assert got[method]["resumed_from"] == []


def test_two_concurrent_submissions_submit_each_run_once(env, tmp_path):
    results = tmp_path / "runs"
    two = ["--only", "task=arith,seed=42,method=standard,method=mirror"]
    procs = [mdm(env, results, *two, *SLURM, "--slurm", "sbatch.hold=true", wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    said = sorted(o.split("runs selected, ")[1].splitlines()[0] for o, _ in outs)
    assert said == ["0 already done, 0 queued or running, 2 to submit", "0 already done, 2 queued or running, 0 to submit"], outs
    ids = {m: j["job_id"] for m, j in jobs(results).items()}
    try:
        assert sorted(ids) == ["mirror", "standard"]
        array = {i.split("_")[0] for i in ids.values()}
        assert len(array) == 1  # one array of two tasks, from one of the two commands
        queued = squeue_of(next(iter(array))).split()
        assert sorted(queued[0::2]) == sorted(ids.values()) and set(queued[1::2]) == {"PENDING"}, queued
    finally:
        subprocess.run(["scancel", *ids.values()])


def test_a_bad_config_run_is_recorded_failed_and_not_requeued(env, tmp_path):
    results = tmp_path / "runs"
    one = ["--only", "task=arith,seed=42,method=standard,family=mdm"]
    mdm(env, results, *one, *SLURM, "--set", "tasks.arith.model.base=/nonexistent/base")
    job = jobs(results)["standard"]["job_id"]
    wait_for(lambda: records(results).get("standard") and not squeue_of(job).strip(), 240, "the job to end")
    rec = records(results)["standard"]
    assert rec["status"] == "failed" and "/nonexistent/base: no such model folder" in rec["reason"], rec
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in show and "Restarts=0" in show, show
    states, text = status(results, *one, "--set=tasks.arith.model.base=/nonexistent/base")
    assert states == {"standard": ("failed", job)}, text
