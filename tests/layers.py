"""The one-way import rule of `mdm/`, checked by `make lint` (and tests/test_layers.py).

Every top-level unit of the package (a subpackage or a module: `mdm.train`, `mdm.cache`, ...) sits in one layer;
a unit may import only units of lower layers. Imports are read from the source (AST): module-level and
function-level `import` / `from ... import`, and `importlib.import_module("mdm....")` with a literal name.
Plugins named by string in a registry (`register_lazy`, a TaskSpec `loader`, `lazy_exports`) are lookups, not
imports. Run: `python -m tests.layers [package_dir]`; exit 1 with one line per upward import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# lowest first; the allowed direction is downwards (a later layer imports an earlier one, never the reverse)
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("lazy", "registry", "cache", "io", "schema", "tiny", "progress", "provenance", "remote_code", "compat"),  # torch-free utilities
    ("adapters",),  # model families: loading, probes
    ("objective", "models", "maskgit"),  # the MDM objective and its components; tiny backbones; MaskGIT loop
    ("data",),  # tasks, tokenizers, collation into MDMBatch
    ("sampler",),  # LLaDA decoding
    ("variance", "eval"),  # the profiler and P-POTS fit; decoding + scoring of a trained run
    ("train",),  # the trainer (uses the P-POTS fit of mdm.variance)
    ("t2i",),  # the text-to-image task stack
    ("bench", "report", "generate"),  # benchmark runner, reports, `mdm generate`
    ("cli",),  # the command line: every subsystem registers its subcommands
    ("regression", "mdm"),  # the pinned regression (runs the CLI); the package root
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mdm"


def imports_of(path: Path):
    """(line, imported module) for every mdm import in a file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "mdm":
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mdm":
                    yield node.lineno, alias.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.split(".")[0] == "mdm"):
            yield node.lineno, node.args[0].value


def violations(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        src = unit_of(module)
        if src not in RANK:
            out.append(f"{path}: unit {src!r} is in no layer of tests/layers.py (add it to LAYERS)")
            continue
        for line, target in imports_of(path):
            dst = unit_of(target)
            if dst == src:
                continue
            if dst not in RANK:
                out.append(f"{path}:{line}: imports {target} (unit {dst!r} is in no layer of tests/layers.py)")
            elif RANK[dst] >= RANK[src]:
                out.append(f"{path}:{line}: {src} (layer {RANK[src]}) imports {target} (layer {RANK[dst]}): "
                           "imports go to lower layers only (tests/layers.py)")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    package = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "mdm"
    found = violations(package)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
