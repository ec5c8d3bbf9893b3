"""The SLURM executor's parts that need no cluster: the multi-node launch derived from a simulated SLURM
environment, the sbatch options from a preset and the slurm section, `--slurm` errors, `--status` from records and a
simulated queue, and the preemption of a training loop by its warning signal (checkpoint, stop, resume: the same
trajectory, each step logged once)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mdm.bench.executors import job as slurm_job
from mdm.bench.executors import slurm, status
from mdm.bench.executors.settings import SlurmSettings
from mdm.bench.runner import launch_command
from mdm.bench.spec import Launch, expand, load_spec
from mdm.cli import main
from mdm.io import atomic_write_json
from mdm.train import RunConfig, Trainer, preempt, read_log
from tests.train.test_train import tiny_run, trajectory

ROOT = Path(__file__).resolve().parents[2]
TABLE1 = str(ROOT / "benchmarks" / "table1.yaml")

NODE_2_OF_4 = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "4", "SLURM_NODEID": "2", "SLURM_PROCID": "2",
               "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[017-018,020],gpu100", "SUBMITIT_EXECUTOR": "slurm"}


def test_multi_node_launch_takes_rank_address_and_port_from_slurm_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("SLURM_") or k in ("MASTER_PORT", "MDM_MAIN_PORT")]:
        monkeypatch.delenv(k)
    for k, v in NODE_2_OF_4.items():
        monkeypatch.setenv(k, v)
    args = slurm_job.accelerate_args()
    assert args == ["--num_machines", "4", "--machine_rank", "2", "--main_process_ip", "gpu017",
                    "--main_process_port", str(15000 + 4242 % 15000)]
    monkeypatch.setenv("MASTER_PORT", "29400")
    assert slurm_job.accelerate_args()[-1] == "29400"
    # the same from a mapping (os.environ is left as it was)
    assert slurm_job.accelerate_args({**NODE_2_OF_4, "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "a1,b[3-4]"})[:6] == \
        ["--num_machines", "4", "--machine_rank", "0", "--main_process_ip", "a1"]
    assert os.environ["SLURM_NODEID"] == "2"
    assert slurm_job.accelerate_args({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0"}) == []
    # a 16-process run over 4 nodes: training launches 16 processes over 4 machines (accelerate's argparse keeps
    # the last --num_processes), the evaluation 4 on node 0 alone
    from mdm.eval.launch import eval_command

    job = slurm_job.RunJob(None, {}, Launch(config_file="ds.yaml", num_processes=16), nodes=4)
    seen = {}
    monkeypatch.setattr(slurm_job.runner, "execute", lambda run, version, launch: seen.setdefault("launch", launch)
                        and {"status": "done"})
    monkeypatch.setattr(slurm_job.runner, "record_status", lambda run: "pending")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv(preempt.ENV, "USR1")  # the job sets it: restored after the test
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        assert job() == "done"
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    node = seen["launch"]
    cmd = launch_command(node, Path("r.yaml"))
    assert cmd[cmd.index("--config_file"):] == ["--config_file", "ds.yaml", "--num_processes", "4", "--num_processes",
                                                "16", "--num_machines", "4", "--machine_rank", "0",
                                                "--main_process_ip", "gpu017", "--main_process_port", "29400",
                                                "-m", "mdm.cli", "train", "r.yaml"]
    ev = eval_command(Path("run"), node, Path("s.json"))
    assert ev[ev.index("--config_file"):ev.index("mdm.cli") - 1] == ["--config_file", "ds.yaml", "--num_processes", "4"]
    assert launch_command(Launch(config_file="ds.yaml", num_processes=8), Path("r.yaml"))[-7:-4] == \
        ["ds.yaml", "--num_processes", "8"]  # a local launch: nothing added


@pytest.fixture(scope="module")
def table1():
    return load_spec(TABLE1)  # every preset, validated once


def test_sbatch_options_from_the_preset_and_the_slurm_section(table1, tmp_path):
    spec = table1
    preset = spec.bench.presets["paper"]
    runs = expand(spec, "paper", tmp_path)[:3]
    settings = SlurmSettings(partition="gpu", account="proj", qos="high", constraint="h100", time="1-00:00:00",
                             nodes=2, cpus_per_task=32, mem_gb=512, sbatch={"exclusive": True})
    p = slurm.sbatch_parameters(settings, preset, runs, "mdm.table1.x", "/work")
    assert p["gpus_per_node"] == 4 and p["nodes"] == 2 and p["ntasks_per_node"] == 1  # 8 GPUs over 2 nodes
    assert {k: p[k] for k in ("partition", "account", "qos", "constraint", "time", "cpus_per_task", "mem")} == \
        {"partition": "gpu", "account": "proj", "qos": "high", "constraint": "h100", "time": "1-00:00:00",
         "cpus_per_task": 32, "mem": "512GB"}
    assert p["additional_parameters"] == {"signal": "USR1@120", "requeue": True, "chdir": "/work", "exclusive": True}
    # the tiny preset: no launch, no GPU; no time given: twice the longest estimate + 30 min
    tiny_runs = expand(spec, "tiny", tmp_path)[:2]
    q = slurm.sbatch_parameters(SlurmSettings(), spec.bench.presets["tiny"], tiny_runs, "n", "/w")
    assert "gpus_per_node" not in q and "partition" not in q and isinstance(q["time"], int) and q["time"] >= 31


@pytest.mark.parametrize("args, line", [
    (["--executor", "slurm", "--slurm", "partion=gpu"],
     "mdm bench: error: --slurm: unknown key 'partion'; allowed: partition, account, qos, constraint, time, nodes"),
    (["--executor", "slurm", "--slurm", "time=soon"], "mdm bench: error: --slurm: time: expected minutes or "
                                                      "[D-]HH:MM:SS; got 'soon'"),
    (["--slurm", "partition=gpu"], "mdm bench: error: --slurm: sets the slurm executor's options; add --executor slurm"),
    (["--executor", "kubernetes"], "mdm bench: error: --executor: unknown executor 'kubernetes'; allowed: local, slurm"),
])
def test_bad_slurm_options_are_one_line_before_any_submission(args, line, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "squeue", lambda: pytest.fail("the queue was read"))
    assert main(["bench", TABLE1, "--results", str(tmp_path), "--only", "task=arith,method=standard", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and "\n" not in err, err


def test_status_reads_records_and_the_queue(table1, tmp_path, monkeypatch, capsys):
    spec = table1
    runs = expand(spec, "tiny", tmp_path)
    runs = [r for r in runs if r.task == "arith" and r.seed == 42][:7]
    # no job anywhere: records only, squeue is not asked
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **k: pytest.fail("squeue was run"))
    atomic_write_json(runs[0].record_path, {"status": "done", "metrics": {"score": 0.25}, "wall_time_s": 12.0})
    atomic_write_json(runs[1].record_path, {"status": "failed", "reason": "NaN loss at step 3"})
    counts = status.print_status(spec, "tiny", runs[:3], str(tmp_path))
    out = capsys.readouterr().out
    assert counts["done"] == counts["failed"] == counts["not started"] == 1, out
    assert "score 0.2500, 12s" in out and "NaN loss at step 3" in out
    # jobs: queued (pending, requeued after an interruption), running, lost, a reused id of another job, no squeue
    names = {"job_name": "mdm.table1.abc"}
    jobs = {str(r.run_dir): {"job_id": f"9_{i}", **names, "log": f"log{i}"} for i, r in enumerate(runs)}
    jobs[str(runs[6].run_dir)]["job_name"] = "mdm.table1.old"
    atomic_write_json(tmp_path / "table1" / ".slurm" / "jobs.json", jobs)
    atomic_write_json(runs[2].record_path, {"status": "interrupted", "reason": "interrupted by SIGUSR1; ..."})
    queue = {"9_2": ("PENDING", "mdm.table1.abc"), "9_3": ("RUNNING", "mdm.table1.abc"),
             "9_4": ("COMPLETING", "mdm.table1.abc"), "9_6": ("RUNNING", "mdm.table1.abc")}
    monkeypatch.setattr(status, "squeue", lambda: queue)
    want = ["done", "failed", "queued", "running", "running", "lost", "lost"]
    assert [status.run_state(r, jobs[str(r.run_dir)], queue)[0] for r in runs] == want
    counts = status.print_status(spec, "tiny", runs, str(tmp_path))
    out = capsys.readouterr().out
    assert counts["running"] == 2 and counts["queued"] == 1 and counts["lost"] == 2, out
    assert "after: interrupted by SIGUSR1" in out and "see log5" in out
    assert out.strip().splitlines()[-1] == "totals: 1 done, 2 running, 1 queued, 1 failed, 0 interrupted, 2 lost"

    def no_slurm():
        raise slurm.ConfigError("squeue", "cannot read the SLURM queue")
    monkeypatch.setattr(status, "squeue", no_slurm)
    counts = status.print_status(spec, "tiny", runs, str(tmp_path))
    assert counts["unknown"] == 6 and "warning: squeue: cannot read the SLURM queue" in capsys.readouterr().out


def test_a_warning_signal_checkpoints_at_the_next_step_and_the_rerun_resumes_the_same_trajectory(tmp_path,
                                                                                                 monkeypatch):
    cache = tmp_path / "cache"
    plain = tiny_run(tmp_path / "plain", cache, training__max_steps=12, training__checkpoint_every=100)
    whole = Trainer(RunConfig.model_validate(plain)).train()
    cfg = tiny_run(tmp_path / "stopped", cache, training__max_steps=12, training__checkpoint_every=100)
    monkeypatch.setenv(preempt.ENV, "USR1")
    monkeypatch.setitem(preempt.STATE, "signal", None)
    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    log = tmp_path / "stopped" / "train_log.jsonl"

    def send():
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=send, daemon=True).start()
    try:
        with pytest.raises(preempt.Preempted) as stop:
            Trainer(RunConfig.model_validate(cfg)).train()
    finally:
        signal.signal(signal.SIGUSR1, before[0])
        signal.signal(signal.SIGTERM, before[1])
    step = stop.value.step
    assert 3 <= step < 12 and stop.value.signame == "SIGUSR1"
    assert [p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir()] == [f"step_{step:08d}"]
    assert len(read_log(tmp_path / "stopped")) == step
    monkeypatch.delenv(preempt.ENV)
    monkeypatch.setitem(preempt.STATE, "signal", None)
    resumed = Trainer(RunConfig.model_validate(cfg)).train()
    assert resumed["resumed_from"] == [step] and resumed["metrics"] == whole["metrics"]
    assert trajectory(read_log(tmp_path / "stopped")) == trajectory(read_log(tmp_path / "plain"))
    assert json.loads((tmp_path / "stopped" / "result.json").read_text())["status"] == "done"
