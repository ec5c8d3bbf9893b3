"""The one cache root of every derived artifact (tiny tokenizers and bases, P-POTS pilots, text-to-image codebooks
and CLIPs): `$MDM_CACHE`, default `~/.cache/mdm`, or a run's `model.cache_dir`.

One rule for every cache of derived artifacts: its key covers the inputs AND `code_version(<deriving modules>)`, so
an edit of the code that derives an artifact can never return one derived by the old code:

    key = config_hash([inputs, code_version("mdm.train.ppots")])

`code_version` hashes the source of the named modules and of every mdm module they reach (imports at any depth,
deferred imports inside functions, and module names written as strings: lazy exports, registry and task-hook
targets), parsed (comments and docstrings do not count), plus the versions of the numeric libraries. Every cache
and the modules that derive it are listed in `DERIVED` (tests/test_cache_keys.py checks each one's key moves).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from mdm.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent  # the mdm package's folder
# the libraries whose version can change a derived artifact's numbers
LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "accelerate", "open_clip_torch")
# every cache of derived artifacts: kind -> the modules whose code derives it (with all they reach)
DERIVED = {
    "tokenizer": ("mdm.data.tokenizer",),  # mdm.data.build_tokenizer: <cache>/tokenizers/<key>/
    "base": ("mdm.train.model",),  # mdm.train.model.ensure_base: <cache>/bases/<task>-<family>-<key>/
    "pilot": ("mdm.train.ppots", "mdm.models"),  # fit_density: <cache>/ppots/<key>.json (+ the model class's file)
    "codebook": ("mdm.t2i.image_tokenizer",),  # tiny_image_tokenizer: <cache>/t2i/codebook-<key>/
    "clip": ("mdm.t2i.clip",),  # tiny_clip: <cache>/t2i/clip-<key>/
    "codes": ("mdm.t2i.codes",),  # cached_codes: <cache>/t2i/codes-<key>/ (+ the image tokenizer's model source)
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get("MDM_CACHE", Path.home() / ".cache" / "mdm"))


def config_hash(obj) -> str:
    """The 16-hex-digit key of a cached artifact: sha256 of its settings as sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def writable_cache(cache_dir: str | Path | None = None) -> Path:
    """The cache root, created if needed; a ConfigError naming where it came from when it cannot be written
    (checked by writing a file: as root, permission bits say nothing about a read-only filesystem)."""
    root = cache_root(cache_dir)
    where = "model.cache_dir" if cache_dir else ("MDM_CACHE" if "MDM_CACHE" in os.environ else "cache (~/.cache/mdm)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(where, f"{root}: the cache folder is not writable ({e.strerror or e}); set MDM_CACHE or "
                          "model.cache_dir to a writable folder (tiny tokenizers, base models and P-POTS pilots "
                          "are cached there)") from None
    return root


def _read_source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _module_files() -> dict[str, Path]:
    """Every module of the mdm package by name (a package by its __init__.py), found without importing any."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        files[".".join(("mdm", *parts))] = path
    return files


def _module_file(name: str) -> Path | None:
    return _module_files().get(name)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


MODULE_TEXT = re.compile(r"\bmdm(?:\.[A-Za-z_]\w*)+")


# what parsing a source text gives (raw sha256 -> [normalised sha256, imports, strings]), kept like bytecode in the
# package's __pycache__ (parsing ~70 modules costs ~1 s; a process then reads ~70 small files): a best-effort memo,
# per Python version (its ast) and per version of this file (the rule)
_INDEX: dict | None = None
_INDEX_NEW: dict = {}


def _index_path() -> Path:
    rule = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return PACKAGE / "__pycache__" / f"mdm-code-index.py{sys.version_info[0]}{sys.version_info[1]}-{rule}.json"


def _index() -> dict:
    global _INDEX
    if _INDEX is None:
        try:
            _INDEX = json.loads(_index_path().read_text())
        except (OSError, ValueError):
            _INDEX = {}
    return _INDEX


def _save_index() -> None:
    """Add this process's newly parsed sources to the memo (atomic; a lost race only costs a re-parse)."""
    if not _INDEX_NEW:
        return
    path = _index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            merged = {**json.loads(path.read_text()), **_INDEX_NEW}
        except (OSError, ValueError):
            merged = dict(_INDEX_NEW)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", suffix=".json", delete=False) as f:
            json.dump(merged, f)
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)
        _INDEX_NEW.clear()
    except OSError:
        pass  # a read-only install: parse again next time


def _parse(text: str, name: str, is_package: bool) -> list:
    """[normalised sha256, imports, strings] of one module's source (see `_parsed`)."""
    tree = _without_docstrings(ast.parse(text))
    here = name if is_package else name.rpartition(".")[0]
    imports: set[str] = set()
    strings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            imports.add(base)
            imports.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where a module is
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.update(MODULE_TEXT.findall(node.value))
            if is_package and re.fullmatch(r"[A-Za-z_]\w*", node.value):
                strings.add(f"{name}.{node.value}")
    return [hashlib.sha256(ast.dump(tree).encode()).hexdigest(), sorted(imports), sorted(strings)]


@functools.cache
def _parsed(name: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """(normalised source hash, modules its code imports, modules its strings name) of mdm module `name`.

    Normalised: the parsed tree without docstrings (comments never reach it). Imports: at any depth (deferred ones
    inside functions too), relative ones resolved. Strings: mdm module names (`"mdm.t2i.task:loader"`: task hooks,
    registry targets, import_module) and, in a package, names of its submodules (lazy exports: `{"X": "collate"}`)."""
    path = _module_file(name)
    if path is None:
        raise ValueError(f"code_version: {name!r} is not a module of the mdm package")
    text = _read_source(path)
    is_package = path.name == "__init__.py"
    raw = hashlib.sha256(f"{name}\0{int(is_package)}\0{text}".encode()).hexdigest()
    entry = _index().get(raw)
    if entry is None:
        entry = _INDEX_NEW[raw] = _parse(text, name, is_package)
    return entry[0], _modules(set(entry[1]), name), _modules(set(entry[2]), name)


def _modules(names: set[str], own: str) -> frozenset[str]:
    """The mdm modules among `names` and their prefixes (a dotted name may end in a function or class)."""
    out = set()
    for text in names:
        parts = text.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(m for m in out if m != own and _module_file(m) is not None)


def code_modules(*modules: str) -> list[str]:
    """The mdm modules whose code derives what `modules` derive: these, what they import, what their strings name
    (each followed in turn), and the parent packages an import executes (their own imports followed, their lazy
    exports not: a parent package is run, not used)."""
    todo, seen = list(modules), {}
    while todo:
        name = todo.pop()
        if seen.get(name) == "full":
            continue
        seen[name] = "full"
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
            if parent not in seen:
                seen[parent] = "parent"
                todo.extend(_parsed(parent)[1])
        _, imports, strings = _parsed(name)
        todo.extend(m for m in (*imports, *strings) if seen.get(m) != "full")
    return sorted(seen)


@functools.cache
def code_version(*modules: str) -> str:
    """16 hex digits naming the code that derives an artifact: the parsed source (no comments, no docstrings) of
    `code_modules(*modules)` and the versions of `LIBRARIES`. Changes whenever any of that code changes; a comment
    or docstring edit leaves it."""
    h = hashlib.sha256()
    for name in code_modules(*modules):
        h.update(f"{name}\0{_parsed(name)[0]}\0".encode())
    _save_index()
    h.update(_library_versions().encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _library_versions() -> str:
    versions = []
    for lib in LIBRARIES:
        try:
            versions.append(f"{lib}={importlib.metadata.version(lib)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{lib}=-")
    return "\0".join(versions)


def derivation(kind: str) -> str:
    """The code version of a cache kind of `DERIVED` (what its key must include)."""
    return code_version(*DERIVED[kind])
