import json
import subprocess
import sys

from mdm.objective.method import BENCHMARK_PRESETS


def test_methods_json_lists_every_preset_with_targets_bias_and_cost():
    out = subprocess.run([sys.executable, "-m", "mdm.cli", "methods", "--json"], capture_output=True, text=True,
                         check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(BENCHMARK_PRESETS) - {"ppots+mirror"} <= set(rows)
    assert all({"name", "targets", "unbiased", "cost"} <= set(r) for r in rows.values())
    assert rows["mirror"]["targets"] == ["A"] and rows["mirror"]["cost"] == 2.0
    assert rows["strats"]["targets"] == ["B"] and rows["strats"]["unbiased"]
    assert rows["ppots"]["targets"] == ["A", "B", "C"]
    assert rows["syrm"]["unbiased"] is False and rows["clipped"]["unbiased"] is False
    assert rows["multisample2"]["cost"] == 2.0 and rows["standard"]["cost"] == 1.0


def test_methods_table_is_human_readable():
    out = subprocess.run([sys.executable, "-m", "mdm.cli", "methods"], capture_output=True, text=True, check=True)
    assert "mirror_released_plus (released code)" in out.stdout and "unbiased" in out.stdout


HEAVY = ("torch", "transformers", "pandas", "scipy", "datasets")
PROBE = """
import sys
from mdm.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
print("RC=" + str(rc))
"""


def _imports_of(*argv, tmp_path=None):
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True,
                         cwd=tmp_path)
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return [m for m in lines.get("HEAVY", "").split(",") if m], lines.get("RC"), out.stderr


def test_help_and_config_errors_import_no_torch(tmp_path):
    """`mdm --help` and config errors answer without importing torch (benchmarks/perf/cli_startup.py times them)."""
    for cmd in ([], ["train"], ["bench"], ["variance"], ["fit-ppots"], ["eval"], ["report"]):
        heavy, rc, _ = _imports_of(*cmd, "--help")
        assert heavy == [] and rc == "0", (cmd, heavy)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {task: arith}\ntraining: {lrr: 1}\noutput_dir: x\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ntaskz: [arith]\n")
    for cmd, fragment in ((["train", str(bad)], "training.lrr: unknown key"),
                          (["train", str(tmp_path / "missing.yaml")], "no such file"),
                          (["bench", str(spec)], "spec.yaml"), (["eval", str(tmp_path / "no-run")], "no such")):
        heavy, rc, err = _imports_of(*cmd)
        assert rc == "2" and fragment in err and heavy == [], (cmd, heavy, err)
