"""The one-way import rule of `mdm/`, checked by `make lint` (and tests/test_layers.py).

Every top-level unit of the package (a subpackage or a module: `mdm.train`, `mdm.cache`, ...) sits in one layer;
a unit may import only units of lower layers. Imports are read from the source (AST): module-level and
function-level `import` / `from ... import`, and `importlib.import_module("mdm....")` with a literal name.
Plugins named by string in a registry (`register_lazy`, a TaskSpec `loader`, `lazy_exports`) are lookups, not
imports. Run: `python -m tests.layers [package_dir]`; exit 1 with one line per problem.

It also checks the rule "function-level imports only where they defer a heavy optional dependency, each with its
reason": every `import` / `from ... import` inside a function or method carries a `# deferred: <reason>` comment
on its first line or on the line directly above it; a comment above the first statement of a consecutive run of
import statements covers the whole run. One line per import without its reason.
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
    ("decoding",),  # decoding strategies (commit rules), ARM decoding, prompt text
    ("sampler",),  # LLaDA decoding
    ("variance", "eval"),  # the profiler and P-POTS fit; decoding + scoring of a trained run
    ("train",),  # the trainer (uses the P-POTS fit of mdm.variance)
    ("t2i",),  # the text-to-image task stack
    ("bench", "report", "generate", "profiling"),  # benchmark runner, reports, `mdm generate`, `mdm variance`
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


DEFERRED = "# deferred:"
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def undeferred_imports(source: str, filename: str = "<string>") -> list[int]:
    """Line of every function-level import in `source` that carries no `# deferred:` reason."""
    lines = source.splitlines()

    def on(lineno: int) -> bool:  # the statement's first line carries the reason
        return DEFERRED in lines[lineno - 1]

    def above(lineno: int) -> bool:  # a comment line of its own directly above
        return lineno > 1 and lines[lineno - 2].lstrip().startswith("#") and DEFERRED in lines[lineno - 2]

    out = []

    def check(block: list) -> None:  # one statement list: runs of consecutive import statements
        i = 0
        while i < len(block):
            j = i
            while j < len(block) and isinstance(block[j], (ast.Import, ast.ImportFrom)):
                j += 1
            if j > i and not above(block[i].lineno):  # a comment above the run covers it
                out.extend(s.lineno for s in block[i:j] if not (on(s.lineno) or above(s.lineno)))
            i = max(j, i + 1)

    def visit(node: ast.AST, in_function: bool) -> None:
        in_function = in_function or isinstance(node, FUNCTIONS)
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if in_function and isinstance(block, list):
                check(block)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(source, filename), False)
    return sorted(out)


def violations(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        src = unit_of(module)
        if src not in RANK:
            out.append(f"{path}: unit {src!r} is in no layer of tests/layers.py (add it to LAYERS)")
            continue
        for line in undeferred_imports(path.read_text(), str(path)):
            out.append(f"{path}:{line}: function-level import without its reason: add `# deferred: <reason>` "
                       "on its line or the line above (tests/layers.py)")
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
