"""The one cache root of every derived artifact (tiny tokenizers and bases, P-POTS pilots, variance warm-ups,
text-to-image codecs): `$MDM_CACHE`, default `~/.cache/mdm`, or a run's `model.cache_dir`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from mdm.errors import ConfigError


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
