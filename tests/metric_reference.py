"""Plain-loop metric references shared by the benchmark and CLI tests."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def naive_ap_at_10(order: Sequence[Any], relevant: Collection[Any]) -> float:
    """AP@10 of a ranked list: the precision at each relevant hit of the top 10, summed, over the number of
    relevant items (the benchmarks' normalisation)."""
    hits, total = 0, 0.0
    for i, item in enumerate(order[:10], start=1):
        if item in relevant:
            hits += 1
            total += hits / i
    return total / len(relevant)
