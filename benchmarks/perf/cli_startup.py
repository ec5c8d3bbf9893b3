"""Wall time of `mdm` commands that answer without computing: `--help` and config errors (issue: < 1 s).

    python benchmarks/perf/cli_startup.py [--repeats 5] [--json OUT]

Each command runs in a fresh `python -m mdm.cli` process (what a user's shell does); the number is the median
wall time over `repeats` runs. Baselines in the same run: a bare `python -c pass` (interpreter start-up) and
`python -c "import torch"` (what every command paid before the CLI's imports were made lazy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 1.0


def wall(argv: list[str], repeats: int) -> dict:
    times, rc = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        rc = out.returncode
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "returncode": rc,
            "stderr_last_line": (out.stderr.strip().splitlines() or [""])[-1][:200]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    py = [sys.executable]
    with tempfile.TemporaryDirectory() as tmp:
        bad_key = Path(tmp, "bad_key.yaml")
        bad_key.write_text("data: {task: arith}\ntraining: {lrr: 1.0e-4}\noutput_dir: runs/x\n")
        bad_spec = Path(tmp, "bad_spec.yaml")
        bad_spec.write_text("name: x\ntaskz: [arith]\n")
        commands = {
            "mdm --help": ["--help"],
            "mdm train --help": ["train", "--help"],
            "mdm bench --help": ["bench", "--help"],
            "mdm train (no such file)": ["train", str(Path(tmp, "missing.yaml"))],
            "mdm train (unknown config key)": ["train", str(bad_key)],
            "mdm bench (spec typo)": ["bench", str(bad_spec)],
            "mdm eval (no such run folder)": ["eval", str(Path(tmp, "no-run"))],
        }
        rows = {"python -c pass (baseline)": wall(py + ["-c", "pass"], args.repeats),
                "python -c 'import torch' (reference)": wall(py + ["-c", "import torch"], args.repeats)}
        for name, argv in commands.items():
            rows[name] = wall(py + ["-m", "mdm.cli", *argv], args.repeats)
    for name, r in rows.items():
        print(f"{name:40s} {r['median_s']:6.3f} s  (min {r['min_s']:.3f}, max {r['max_s']:.3f}, rc {r['returncode']})")
    mdm_rows = {k: v for k, v in rows.items() if k.startswith("mdm")}
    met = all(r["median_s"] < TARGET_S for r in mdm_rows.values())
    print(f"every mdm command < {TARGET_S:g} s: {met}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"repeats": args.repeats, "target_s": TARGET_S, "rows": rows,
                                               "met": met}, indent=2))


if __name__ == "__main__":
    main()
