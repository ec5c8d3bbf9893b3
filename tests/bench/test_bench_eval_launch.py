"""`mdm bench` with a launch config evaluates each run as its own launched job over the launch's processes
(issue 28, item 3): the bench process never loads the model for evaluation (it would sit on cuda:0)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from mdm.cli import main
from mdm.eval.api import update_record

ROOT = Path(__file__).resolve().parents[2]
CPU2 = ROOT / "benchmarks" / "accelerate" / "cpu_2proc.yaml"
ACCURACY = {"n": 4, "gen_length": 8, "steps": 8, "block_length": 8, "likelihood": False}
SPEC = {"name": "t", "seeds": [1], "methods": ["standard"],
        "presets": {"tiny": {"tasks": {"arith": {"n_train": 64, "max_length": 128}},
                             "training": {"max_steps": 1, "global_batch_size": 8, "micro_batch_size": 4},
                             "eval": {"accuracy": ACCURACY},
                             "launch": {"config_file": str(CPU2), "num_processes": 2}}}}


def test_a_launched_run_is_evaluated_by_its_own_launch(tmp_path, monkeypatch):
    import mdm.eval.api

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(SPEC))
    launches = []

    def fake_run(cmd, *a, **k):
        if "accelerate.commands.launch" not in cmd:
            return real_run(cmd, *a, **k)
        launches.append(cmd)
        job = cmd[cmd.index("mdm.cli") + 1]
        if job == "train":  # the trained run's result (what `mdm train` writes)
            run_dir = Path(cmd[-1]).parent
            (run_dir / "result.json").write_text(json.dumps({"status": "done", "metrics": {}, "steps": 1}))
        else:  # what rank 0 of `mdm eval` writes into the record
            update_record(Path(cmd[cmd.index("eval") + 1]) / "record.json", {"arith": {"n": 4}}, {"score": 50.0})
        return subprocess.CompletedProcess(cmd, 0)

    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(mdm.eval.api, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert main(["bench", str(tmp_path / "t.yaml"), "--results", str(tmp_path / "runs")]) == 0
    train, evaluation = launches
    assert train[train.index("mdm.cli") + 1] == "train"
    run_dir = tmp_path / "runs" / "t" / "arith" / "standard" / "seed1"
    assert evaluation[evaluation.index("--config_file") + 1] == str(CPU2)
    assert evaluation[evaluation.index("--num_processes") + 1] == "2"
    assert evaluation[evaluation.index("mdm.cli"):] == ["mdm.cli", "eval", str(run_dir), "--settings",
                                                        str(run_dir / "eval_settings.json")]
    assert json.loads((run_dir / "eval_settings.json").read_text()) == ACCURACY
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "done" and record["eval"] == {"arith": {"n": 4}} and record["metrics"]["score"] == 50.0
