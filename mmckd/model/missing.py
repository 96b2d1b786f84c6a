"""The random-missing evaluation protocol (IMDer / DiCMoR style).

At missing rate MR every available modality of every test clip is dropped independently with
probability MR; when that would drop all of a clip's modalities, one of them (chosen at random) is
kept. The draw depends only on (seed, MR), so every model and seed is judged on the same inputs.
Modalities a clip never had stay absent at every rate (they cannot be "kept").
"""

from __future__ import annotations

import numpy as np


def drop_modalities(present: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Which modalities each clip keeps: present (N, 3) bool -> keep (N, 3) bool, keep <= present."""
    present = np.asarray(present, bool)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missing rate must be in [0, 1); got {rate}")
    rng = np.random.default_rng([int(seed), int(round(rate * 1000))])
    keep = present & (rng.random(present.shape) >= rate)
    pick = rng.random(len(present))  # drawn for every clip, so clips do not shift each other's draws
    for i in np.flatnonzero(~keep.any(1) & present.any(1)):
        options = np.flatnonzero(present[i])
        keep[i, options[min(int(pick[i] * len(options)), len(options) - 1)]] = True
    return keep
