"""Counter-based random numbers: every draw is a hash of (user, day, purpose, slot).

A draw depends only on who, when and what for, never on how many draws came before it. So a
user's random numbers do not depend on the chunk size or on other users, and a counterfactual
run (a forced policy or variant) reuses exactly the same numbers wherever behaviour has not
diverged: common random numbers for free. Monte Carlo replications get their own streams by
re-keying each user.

The mixing function is SplitMix64's finaliser (Steele, Lea & Flood 2014, "Fast splittable
pseudorandom number generators", OOPSLA), applied twice.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TO_UNIT = 2.0**-53
_MASK = 0xFFFFFFFFFFFFFFFF
_GOLDEN_INT = 0x9E3779B97F4A7C15

SLOT_BITS = 20
PURPOSE_BITS = 6


class Purpose(IntEnum):
    """What a draw is for; each purpose is its own stream."""

    ARRIVAL = 1
    COUNTRY = 2
    CHANNEL = 3
    PLATFORM = 4
    PLAN = 5
    ENGAGEMENT = 6
    DECAY = 7
    SESSIONS_RATE = 8
    BUYER = 9
    TASTE = 10
    TASTE_SECOND = 11
    POLICY = 12
    ONBOARDING = 13
    CHECKOUT = 14
    ACTIVE = 20
    SESSION_COUNT = 21
    SESSION_TIME = 22
    REC_REQUEST = 23
    VIEW_COUNT = 24
    REC_ITEM = 25
    REC_CLICK = 26
    BROWSE_ITEM = 27
    CLICK = 28
    CART = 29
    BUY = 30
    QUANTITY = 31
    GAP = 32


def mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on an array: a bijection of 64-bit integers with full avalanche.

    Array multiplication wraps modulo 2**64 silently, as the finaliser needs.
    """
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mix_int(z: int) -> int:
    """``mix`` for one Python integer (numpy scalars would warn about the intended wrap-around)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def user_keys(seed: int, user_index: np.ndarray) -> np.ndarray:
    """The key of each user's streams, from the simulation seed and the user's index."""
    seed_key = np.uint64(_mix_int(seed * _GOLDEN_INT + 1))
    return mix(seed_key ^ mix((user_index.astype(np.uint64) + np.uint64(1)) * _GOLDEN))


def replication_keys(keys: np.ndarray, replication: np.ndarray) -> np.ndarray:
    """Keys for Monte Carlo replication ``replication`` (>= 1) of the same users."""
    return mix(keys ^ mix(replication.astype(np.uint64) * _M2 + _GOLDEN))


def counter(day: int, purpose: Purpose) -> int:
    """The base counter of a (day, purpose) pair; draws add a slot (< 2**20) to it."""
    return ((day + 1) << (SLOT_BITS + PURPOSE_BITS)) | (int(purpose) << SLOT_BITS)


def uniform(keys: np.ndarray, base: int, slots: np.ndarray | None = None) -> np.ndarray:
    """Uniform draws in (0, 1), one per key; ``slots`` tells apart several draws of one key."""
    if slots is None:
        bits = mix(keys ^ np.uint64(_mix_int(base * _GOLDEN_INT)))
    else:
        bits = mix(keys ^ mix((np.uint64(base) + slots.astype(np.uint64)) * _GOLDEN))
    return ((bits >> _S11).astype(np.float64) + 0.5) * _TO_UNIT


def normal(keys: np.ndarray, base: int, slots: np.ndarray | None = None) -> np.ndarray:
    """Standard normal draws by inversion of uniform draws."""
    return ndtri(uniform(keys, base, slots))


def geometric(u: np.ndarray, mean: np.ndarray | float, cap: int) -> np.ndarray:
    """Counts 0, 1, 2, ... with the given positive mean (geometric law), by inversion; at most ``cap``."""
    ratio = np.asarray(mean, dtype=np.float64) / (1.0 + np.asarray(mean, dtype=np.float64))
    return np.minimum(np.floor(np.log(u) / np.log(ratio)), cap).astype(np.int64)


def categorical(u: np.ndarray, weights: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Category indices drawn with the given (unnormalised) weights, by inversion."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)
