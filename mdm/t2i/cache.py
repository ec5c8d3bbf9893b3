"""Built artifacts of the tiny t2i pipeline (image codebook, tiny CLIP), cached by a hash of their config and code.

    path = cached_dir("clip", config_dict, build)   # build(tmp_dir) fills a fresh folder once

Folders live under `$MDM_CACHE/t2i/<kind>-<hash>/` (default `~/.cache/mdm`). A build writes into a
temporary sibling folder and renames it into place (atomic: a reader sees the whole folder or none), under
a file lock so that concurrent processes build it once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mdm.cache import cache_root as root
from mdm.cache import config_hash, derivation
from mdm.io import file_lock

DONE = ".complete"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return root() / "t2i"


def cached_dir(kind: str, config: dict, build: Callable[[Path], None], cache_dir: str | Path | None = None) -> Path:
    """The folder of artifact `kind` for `config`, built by `build(folder)` if it is not cached yet. The key covers
    `config` and the code that derives `kind` (`mdm.cache.DERIVED`, `derivation`)."""
    config = {**config, "code": derivation(kind)}
    final = cache_root(cache_dir) / f"{kind}-{config_hash(config)}"
    if (final / DONE).is_file():
        return final
    with file_lock(final.with_name(final.name + ".lock")):
        if (final / DONE).is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
        try:
            build(tmp)
            (tmp / "cache_key.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
            (tmp / DONE).write_text("")
            os.chmod(tmp, 0o755)
            shutil.rmtree(final, ignore_errors=True)  # a partial folder from an older, killed layout
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
