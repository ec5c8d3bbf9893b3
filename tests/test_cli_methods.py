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
