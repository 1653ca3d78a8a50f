"""Pure weight arithmetic of the local target: who gets which share of the traffic.

Weights are whole percentages that always add up to 100 over the versions that
serve (or are all zero when nothing does).
"""

from __future__ import annotations

from collections.abc import Mapping


def apportion(shares: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over the keys in proportion to ``shares`` (largest remainder).

    Keys with a zero share get zero; ties in the remainders go to the earlier key,
    so the result is deterministic.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if any(share < 0 for share in shares.values()):
        raise ValueError(f"shares must be >= 0, got {dict(shares)}")
    whole = sum(shares.values())
    if whole == 0:
        return dict.fromkeys(shares, 0)
    result = {key: share * total // whole for key, share in shares.items()}
    left = total - sum(result.values())
    by_remainder = sorted(
        (key for key in shares if shares[key] > 0),
        key=lambda key: -((shares[key] * total) % whole),
    )
    for key in by_remainder[:left]:
        result[key] += 1
    return result


def proportional_weights(counts: Mapping[str, int]) -> dict[str, int]:
    """Weights in proportion to instance counts, e.g. mid-rolling {old: 2, new: 1} -> 67/33."""
    return apportion(counts, 100)


def canary_weights(current: Mapping[str, int], canary: str, weight: int) -> dict[str, int]:
    """``canary`` gets ``weight``; the other serving versions share the rest in proportion
    to their current weights. With nothing else serving the canary gets everything."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, got {weight}")
    others = {version: w for version, w in current.items() if version != canary and w > 0}
    result = dict.fromkeys(current, 0)
    if not others:
        result[canary] = 100
        return result
    result.update(apportion(others, 100 - weight))
    result[canary] = weight
    return result
