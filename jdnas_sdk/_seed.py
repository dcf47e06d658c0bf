"""Seeded random initialisation: the same seed gives the same weights, in any process.

torch seeds each process from the OS, so a detector built (or grown, or morphed) without a seed
starts from other weights every run. :func:`seeded` runs a block with torch's generator seeded
and restores the caller's generator afterwards (the caller's own random stream is untouched);
:func:`stable_seed` derives a seed from plain values (an architecture code, an action), stable
across processes and Python's hash randomisation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (by their ``str``), the same in every process and Python."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by ``seed``; the generator's previous
    state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % 2**63)
        yield
