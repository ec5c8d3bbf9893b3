"""What every record states about where it was computed: the code version (git commit, dirty) and the hardware
(CPU model and SIMD level, the kernel switches, GPU)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # a source checkout; an installed package reports commit "unknown"


def code_version() -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown", "dirty": None}
    if head.returncode:
        return {"commit": "unknown", "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def cpu_name() -> str:
    """The CPU model (/proc/cpuinfo 'model name'), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    import torch  # deferred: torch, heavy; mdm.provenance is torch-free

    # the CPU kernels float32 results depend on (tests/README.md, "Numerics policy"): the SIMD level torch
    # dispatches to, and the environment switches that change it (ATEN_CPU_CAPABILITY, MKL_CBWR)
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "device": "cpu"}
    info.update({k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR") if k in os.environ})
    if torch.cuda.is_available():
        info.update(device="cuda", gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return info
