"""The one-way import rule (tests/layers.py, run by `make lint`): holds on the package, and catches an upward import,
a function-level one and an importlib one alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.layers import LAYERS, main, violations

PACKAGE = Path(__file__).resolve().parents[1] / "mdm"


def test_the_package_imports_downwards_only():
    assert violations(PACKAGE) == []
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))  # one layer per unit


@pytest.mark.parametrize("added", [
    "from mdm.bench.spec import load_spec\n",  # the data layer importing the runner, at module level
    "def f():\n    from mdm.report import tables\n",  # inside a function
    "import importlib\n\ndef g():\n    return importlib.import_module('mdm.train.trainer')\n",  # through importlib
])
def test_an_upward_import_fails_the_lint(tmp_path, added, capsys):
    copy = tmp_path / "mdm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert main([str(copy)]) == 0
    with open(copy / "data" / "collate.py", "a") as f:
        f.write("\n" + added)
    assert main([str(copy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mdm/data/collate.py" in err[0] and "data (layer 4) imports" in err[0]
