"""CI regression: the tiny `benchmarks/regression.yaml` runs, checked against pinned trajectories.

    python -m mdm.regression            # run the spec into a temp folder and compare (exit 1 on mismatch)
    python -m mdm.regression --update   # deliberately re-pin (`make regression-update`)

Any change to an estimator, the trainer or the data that moves a number fails here until the reference
is regenerated on purpose, and the diff of `benchmarks/regression_reference.json` shows what moved.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "benchmarks" / "regression.yaml"
REFERENCE = REPO / "benchmarks" / "regression_reference.json"
RTOL, ATOL = 1e-4, 1e-6  # tight: same-machine reruns are bit-identical; this only absorbs cross-CPU float noise


def run(results: Path, only: str | None = None) -> None:
    from mdm.cli import main

    args = ["bench", str(SPEC), "--results", str(results)] + (["--only", only] if only else [])
    if main(args) != 0:
        raise RuntimeError("regression bench did not run")


def collect(results: Path) -> dict:
    """{task/method/seed: {status, train_loss: [...], heldout_loss}} from the records and their logs."""
    out = {}
    for record_path in sorted(results.rglob("record.json")):
        record = json.loads(record_path.read_text())
        log = record_path.with_name("train_log.jsonl")
        losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()] if log.is_file() else []
        key = f"{record['task']}/{record['method']}/seed{record['seed']}"
        out[key] = {"status": record["status"], "train_loss": losses,
                    "heldout_loss": (record.get("metrics") or {}).get("heldout_loss")}
    return out


def _close(a, b) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def compare(current: dict, reference: dict) -> list[str]:
    """Human-readable mismatches; empty when every pinned number holds."""
    problems = []
    for key, ref in reference.items():
        cur = current.get(key)
        if cur is None:
            problems.append(f"{key}: missing run")
            continue
        if cur["status"] != ref["status"]:
            problems.append(f"{key}: status {cur['status']} != pinned {ref['status']}")
        if len(cur["train_loss"]) != len(ref["train_loss"]):
            problems.append(f"{key}: {len(cur['train_loss'])} logged steps != pinned {len(ref['train_loss'])}")
        for step, (a, b) in enumerate(zip(cur["train_loss"], ref["train_loss"]), start=1):
            if not _close(a, b):
                problems.append(f"{key}: train loss at step {step} is {a!r}, pinned {b!r}")
                break
        if not _close(cur["heldout_loss"], ref["heldout_loss"]):
            problems.append(f"{key}: held-out loss {cur['heldout_loss']!r}, pinned {ref['heldout_loss']!r}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="re-pin the reference from this run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))
        current = collect(Path(tmp))
    if args.update:
        REFERENCE.write_text(json.dumps(current, indent=1) + "\n")
        print(f"pinned {len(current)} runs in {REFERENCE}")
        return 0
    problems = compare(current, json.loads(REFERENCE.read_text()))
    print("\n".join(problems) or f"regression: {len(current)} runs match the pinned reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
