"""Counter-based seeding: every random draw is keyed by (seed, step, what, row of the global batch).

Keys, not a shared stream, make a run's randomness independent of how the global batch is split over
processes and accumulation steps, and make a resumed run draw exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys) -> int:
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*keys) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))
