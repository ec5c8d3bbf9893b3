"""Preemption of a training run: a signal asks the loop to write a checkpoint at the next step boundary and stop.

A SLURM job of `mdm bench --executor slurm` asks for a warning signal before its time limit (`--signal=USR1@120`)
and sets `MDM_PREEMPT_SIGNAL=USR1` in its environment (inherited by `accelerate launch`ed workers). Then:

    watch()              (the trainer, as its loop starts) a flag-only handler for that signal and SIGTERM, unless
                         the process already has one (mdm.bench.executors.job installs its own in its process)
    requested(acc)       after each step: was the signal received, by any rank (all ranks agree: the checkpoint
                         that follows is collective); False at once where no signal is armed (local runs)
    raise Preempted      after the checkpoint: a KeyboardInterrupt, so the run is recorded `interrupted`, never
                         `failed`; the job requeues itself and the requeued job resumes from that checkpoint

Torch is imported only to agree across ranks.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "MDM_PREEMPT_SIGNAL"  # the warning signal's name (USR1, USR2): set by the SLURM job, read by the trainer
STATE: dict = {"signal": None, "in_loop": False}  # the first signal received; whether a training loop runs


class Preempted(KeyboardInterrupt):
    """The loop stopped on a preemption signal after writing a checkpoint of step `step`."""

    def __init__(self, step: int, signame: str):
        super().__init__(f"preempted by {signame} at step {step}; checkpoint written, a rerun resumes from it")
        self.step, self.signame = step, signame


def armed() -> signal.Signals | None:
    name = os.environ.get(ENV)
    return signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"] if name else None


def _flag(signum, frame) -> None:
    if STATE["signal"] is None:
        STATE["signal"] = signal.Signals(signum).name


def watch() -> None:
    """Catch the armed signal (and SIGTERM: a requeue or preemption by SLURM) as a flag, where nothing of ours
    catches it yet; unblock it (a SLURM job's main process blocks it while its `accelerate launch` runs)."""
    sig = armed()
    if sig is None or threading.current_thread() is not threading.main_thread():
        return
    for s in (sig, signal.SIGTERM):
        if not callable(signal.getsignal(s)):
            signal.signal(s, _flag)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig, signal.SIGTERM})


def requested(acc) -> bool:
    """Did this process, or any other rank, receive the signal? Every rank calls it after every step."""
    if armed() is None:
        return False
    flag = STATE["signal"] is not None
    if acc.num_processes > 1:
        import torch  # deferred: torch, only to agree across ranks

        flag = bool(acc.gather(torch.tensor([int(flag)], device=acc.device)).max().item())
        if flag and STATE["signal"] is None:
            STATE["signal"] = "another rank's signal"
    return flag
