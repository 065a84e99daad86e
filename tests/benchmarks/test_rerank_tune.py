"""`bench rerank` selection: ranking picks the best, but with spans no setting may lose segment quality
(IoU>=0.5) against the default by more than the tolerance; checked against a naive filter-then-sort."""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.rerank_tune import DEFAULT_LABEL, IOU_TOLERANCE, SETTINGS, select_best

LABELS = [label for label, _, _ in SETTINGS]


def metrics(r10: float, map10: float, r1: float, iou: float | None = None) -> dict[str, float]:
    m = {"R@10": r10, "mAP@10": map10, "R@1": r1}
    if iou is not None:
        m["IoU>=0.5"] = iou
    return m


def naive_best(table: dict[str, dict[str, float]]) -> str:
    """Filter by the IoU floor, then a stable sort on the ranking key: the first of the best."""
    floor = table[DEFAULT_LABEL].get("IoU>=0.5")
    ok = [lb for lb in table if floor is None or lb == DEFAULT_LABEL
          or table[lb]["IoU>=0.5"] >= floor - IOU_TOLERANCE]
    return sorted(ok, key=lambda lb: (-table[lb]["R@10"], -table[lb]["mAP@10"], -table[lb]["R@1"]))[0]


def test_a_max_like_setting_that_ties_on_ranking_but_loses_segments_is_not_chosen() -> None:
    # the audit's case: R@10 tied at 100, max 0.1 ahead on mAP@10, IoU>=0.5 12.5 % against auto's 62.5 %
    table = {lb: metrics(0.9, 0.5, 0.4, 0.6) for lb in LABELS}
    table["auto"] = metrics(1.0, 0.900, 0.8, 0.625)
    table["max"] = metrics(1.0, 0.901, 0.8, 0.125)
    sel = select_best(table)
    assert sel.best == "auto" and sel.segments_measured
    assert "max" in sel.excluded and "12.5%" in sel.excluded["max"] and "62.5%" in sel.excluded["max"]
    # without spans the same ranking picks max (ranking only), and says segments were not measured
    no_spans = {lb: {k: v for k, v in m.items() if k != "IoU>=0.5"} for lb, m in table.items()}
    sel = select_best(no_spans)
    assert sel.best == "max" and not sel.segments_measured and sel.excluded == {}


def test_within_the_tolerance_a_better_ranking_setting_still_wins() -> None:
    table = {lb: metrics(0.5, 0.5, 0.5, 0.6) for lb in LABELS}
    table["fusion"] = metrics(0.9, 0.5, 0.5, 0.6 - IOU_TOLERANCE / 2)
    assert select_best(table).best == "fusion"
    table["fusion"]["IoU>=0.5"] = 0.6 - 2 * IOU_TOLERANCE
    sel = select_best(table)
    assert sel.best == DEFAULT_LABEL and list(sel.excluded) == ["fusion"]


def test_select_best_matches_a_naive_reference_on_random_tables() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        # coarse values so that ties on every key happen often
        table = {}
        for lb in LABELS:
            r10, map10, r1 = (float(x) for x in rng.integers(0, 4, 3) / 4)
            table[lb] = metrics(r10, map10, r1, None if trial % 3 == 0 else float(rng.integers(0, 5) / 50 + 0.5))
        sel = select_best(table)
        assert sel.best == naive_best(table), table
        floor = table[DEFAULT_LABEL].get("IoU>=0.5")
        expect_out = set() if floor is None else {
            lb for lb in LABELS if lb != DEFAULT_LABEL and table[lb]["IoU>=0.5"] < floor - IOU_TOLERANCE}
        assert set(sel.excluded) == expect_out and sel.segments_measured == (floor is not None)


def test_exactly_one_point_below_the_default_is_still_eligible() -> None:
    # 6 of 100 against 7 of 100: one point in counts, but 0.06 < 0.07 - 0.01 in floats
    table = {lb: metrics(0.5, 0.5, 0.5, 0.0) for lb in LABELS}
    table[DEFAULT_LABEL] = metrics(0.5, 0.5, 0.5, 7 / 100)
    table["max"] = metrics(0.9, 0.5, 0.5, 6 / 100)
    sel = select_best(table)
    assert sel.best == "max" and "max" not in sel.excluded
