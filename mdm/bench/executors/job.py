"""The body of one SLURM job of `mdm bench --executor slurm`: the run unit `mdm.bench.runner.execute`, plus
preemption (checkpoint, requeue) and the multi-node launch.

Signals (SLURM sends them to every process of the job step):
- the warning signal (`--signal=USR1@120` before the time limit, or `scancel --signal=USR1 JOB`): the training loop
  writes a checkpoint at the next step boundary and stops (mdm.train.preempt); the run is recorded `interrupted`;
  the job requeues itself (`scontrol requeue`), and the requeued job (same id) resumes from that checkpoint, so
  every step is trained and logged once. Outside the loop (bases, pilot, evaluation) an in-process run stops at once
  and the requeued job redoes that phase. A launched run's evaluation is not stopped by the warning (the signal
  stays blocked until `execute` returns): if the time limit ends it, the record is left `evaluating` (--status:
  interrupted) and a resubmission evaluates again without training. At most `max_requeues` requeues
  (SLURM_RESTART_COUNT), then the run stays interrupted.
- SIGTERM (`scontrol requeue`, a preemption with PreemptMode=REQUEUE, `scancel`): the same checkpoint and stop,
  without requeueing: SLURM requeues (or cancels) the job itself, within KillWait seconds.
- a run that fails for its own reason (bad config, NaN loss) is recorded `failed` by `execute`; the job ends
  normally and is not requeued.
With a launch config the training runs in `accelerate launch`'s workers: this process blocks the warning signal
while they run (so the launcher, which inherits the mask, is not killed by it); the workers unblock and catch it.

Multi-node runs (`slurm.nodes` > 1): one task per node; each runs `accelerate launch` with the machine rank,
main address and port derived from SLURM's environment (`accelerate_args`); node 0 also evaluates and records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mdm.bench import runner
from mdm.bench.spec import PlannedRun
from mdm.io import atomic_write_json, read_json
from mdm.train import preempt

PORT_BASE, PORT_SPAN = 15000, 15000  # main process port: 15000 + job id mod 15000 (below Linux's ephemeral range)


@dataclass
class NodeLaunch:
    """The preset's launch config on one node of a multi-node run: `num_processes` per node (the run's evaluation,
    mdm.eval.launch, runs on node 0 alone with it) and `args` for the training launch (mdm.bench.runner
    .launch_command): the total process count (accelerate's --num_processes; argparse keeps the last one), the
    number of machines, this node's rank, the main address and port."""

    config_file: str
    num_processes: int | None
    args: list[str] = field(default_factory=list)


def accelerate_args(environ=None) -> list[str]:
    """`accelerate launch` options of this node's task in a multi-node SLURM job: number of machines, this node's
    rank, the first node of the job as main address, a port from the job id (or MDM_MAIN_PORT / MASTER_PORT).
    Nothing for a one-node job."""
    from submitit.slurm.slurm import SlurmJobEnvironment  # deferred: submitit, only inside a SLURM job

    env = os.environ if environ is None else environ
    saved = os.environ.copy()
    try:
        if environ is not None:  # SlurmJobEnvironment reads os.environ
            os.environ.clear()
            os.environ.update(env)
        slurm = SlurmJobEnvironment()
        nodes = slurm.num_nodes
        if nodes <= 1:
            return []
        port = env.get("MDM_MAIN_PORT") or env.get("MASTER_PORT") or \
            str(PORT_BASE + int(env["SLURM_JOB_ID"]) % PORT_SPAN)
        return ["--num_machines", str(nodes), "--machine_rank", str(slurm.node),
                "--main_process_ip", slurm.hostnames[0], "--main_process_port", port]
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)


def job_id() -> str:
    """This job's id as scontrol and squeue name it (<array job>_<task> in an array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


class RunJob:
    """Picklable callable that submitit runs in the job (on every node of it)."""

    def __init__(self, run: PlannedRun, version: dict, launch, signame: str = "USR1", nodes: int = 1,
                 max_requeues: int = 20):
        self.run, self.version, self.launch, self.signame = run, version, launch, signame
        self.nodes, self.max_requeues = nodes, max_requeues

    def __call__(self) -> str:
        if runner.record_status(self.run) == "done":  # done meanwhile (e.g. by a local run): nothing to do
            return "done"
        warning = signal.Signals[f"SIG{self.signame}"]
        os.environ[preempt.ENV] = self.signame  # the trainer (here, or in the launched workers) watches it
        launch = self.launch
        if launch is not None and self.nodes > 1:
            total = launch.num_processes or self.nodes
            launch = NodeLaunch(launch.config_file, max(1, total // self.nodes),
                                ["--num_processes", str(total), *accelerate_args()])
            if int(os.environ.get("SLURM_NODEID", "0")) != 0:
                return self._other_node(launch, warning)
        caught = {"requeue": False, "active": True}

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if preempt.STATE["signal"] is None:
                preempt.STATE["signal"] = name
            if runner.STOP["signal"] is None:  # execute records the run `interrupted by <name>`
                runner.STOP["signal"] = name
            caught["requeue"] = caught["requeue"] or signum == warning
            # in-process: outside the training loop (setup, evaluation) the run stops at once
            if caught["active"] and launch is None and not preempt.STATE["in_loop"]:
                raise KeyboardInterrupt
            print(f"mdm: {name} received: stopping at the next step boundary", file=sys.stderr, flush=True)

        runner.STOP["signal"] = preempt.STATE["signal"] = None
        signal.signal(warning, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if launch is not None:  # the launcher inherits the mask; the workers unblock it (preempt.watch)
            signal.pthread_sigmask(signal.SIG_BLOCK, {warning})
        try:
            record = runner.execute(self.run, self.version, launch)
        finally:
            caught["active"] = False
            if launch is not None:
                if warning in signal.sigpending():
                    caught["requeue"] = True
                    preempt.STATE["signal"] = preempt.STATE["signal"] or warning.name
                signal.signal(warning, signal.SIG_IGN)  # a pending one must not stop what follows
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {warning})
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue below is followed by SLURM's SIGTERM
        return self._after(record, preempt.STATE["signal"], caught["requeue"])

    def _after(self, record: dict, stopped_by: str | None, requeue: bool) -> str:
        """A run stopped by a signal: `interrupted` (with a launch its workers stopped, so `execute` saw the launch
        end without a result), requeued after a warning signal. Returns the record's status."""
        if record["status"] == "done" or stopped_by is None:
            return record["status"]
        if record["status"] != "interrupted":
            record.update(status="interrupted", reason=f"interrupted by {stopped_by}; a rerun resumes from the last "
                          "checkpoint")
            atomic_write_json(self.run.record_path, record)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if requeue and restarts < self.max_requeues:
            print(f"mdm: {self.run.key} stopped by {stopped_by}; requeueing job {job_id()} (restart "
                  f"{restarts + 1})", file=sys.stderr, flush=True)
            subprocess.run(["scontrol", "requeue", job_id()], check=False, timeout=60)
        return "interrupted"

    def _other_node(self, launch: NodeLaunch, warning) -> str:
        """Node k > 0 of a multi-node run: its share of the workers (node 0 writes run.yaml, records, evaluates)."""
        cfg_path = self.run.run_dir / "run.yaml"
        deadline = time.time() + 600
        while not cfg_path.is_file() and time.time() < deadline:
            time.sleep(1)
        signal.pthread_sigmask(signal.SIG_BLOCK, {warning})
        proc = subprocess.run(runner.launch_command(launch, cfg_path))
        if read_json(self.run.run_dir / "result.json") is None:
            print(f"mdm: node {os.environ.get('SLURM_NODEID')}: the launch ended (code {proc.returncode}) without a "
                  "result", file=sys.stderr)
        return f"node {os.environ.get('SLURM_NODEID')}"
