"""The one-way import rule (tests/layers.py, run by `make lint`): holds on the package, and catches an upward import,
a function-level one and an importlib one alike; and every function-level import carries its `# deferred:` reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.layers import LAYERS, main, undeferred_imports, violations

PACKAGE = Path(__file__).resolve().parents[1] / "mdm"


def test_the_package_imports_downwards_only():
    assert violations(PACKAGE) == []
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))  # one layer per unit


@pytest.mark.parametrize("added", [
    "from mdm.bench.spec import load_spec\n",  # the data layer importing the runner, at module level
    "def f():\n    from mdm.report import tables  # deferred: x\n",  # inside a function
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


@pytest.mark.parametrize("source, bad", [
    ("def f():\n    import json\n", [2]),  # no reason
    ("def f():\n    import json  # deferred: only here\n", []),  # on its line
    ("def f():\n    # deferred: only here\n    import json\n", []),  # on the line above
    ("def f():\n    # deferred: both\n    import json\n\n    from mdm import io\n    x = 1\n", []),  # covers the run
    ("def f():\n    import json  # deferred: json only\n    import os\n", [3]),  # a neighbour's reason is not its own
    ("def f():\n    # deferred: json\n    import json\n    x = 1\n    import os\n", [5]),  # another run
    ("class C:\n    def m(self):\n        if self:\n            from mdm import io\n", [4]),  # nested block
    ("def f():\n    def g():\n        import os\n    return g\n", [3]),  # nested function, reported once
    ("import json\n\nx = json\n", []),  # module level: not this rule
])
def test_function_level_imports_carry_their_reason(source, bad):
    assert undeferred_imports(source) == bad


@pytest.mark.parametrize("added, fails", [
    ("def f():\n    import json\n\n    return json\n", True),
    ("def f():\n    import json  # deferred: only here\n\n    return json\n", False),
])
def test_an_unexplained_function_level_import_fails_the_lint(tmp_path, added, fails, capsys):
    copy = tmp_path / "mdm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "errors.py", "a") as f:
        f.write("\n\n" + added)
    assert main([str(copy)]) == int(fails)
    err = capsys.readouterr().err.strip().splitlines()
    if fails:
        assert len(err) == 1 and "mdm/errors.py" in err[0] and "function-level import without its reason" in err[0]
    else:
        assert err == []
