"""Seeds derived from one base seed (independent, reproducible streams)."""

from __future__ import annotations

import numpy as np


def derive_seed(base: int, *keys: int) -> int:
    """A 32-bit seed for the stream named by ``keys`` under ``base`` (e.g. expert 3 of seed 0)."""
    return int(np.random.SeedSequence([base, *keys]).generate_state(1)[0])
