"""The labelled-set scoring of `bench duplicates`, counted by hand on a small example."""

from __future__ import annotations

import math

from songseek.benchmarks.duplicates import Label, score_pairs, truth_level


def test_score_pairs_counts_levels_false_merges_and_hard_negatives() -> None:
    labels = {"a": Label("A", 0, "base", ""), "a1": Label("A", 1, "mp3", ""), "a2": Label("A", 2, "eq", ""),
              "n": Label("N", 0, "base", "A"), "b": Label("B", 0, "base", "")}
    assert truth_level(labels["a1"], labels["a2"]) == 2 and truth_level(labels["a"], labels["n"]) == 0
    pred = {("a", "a1"): 1, ("a", "a2"): 1, ("a1", "a2"): 2, ("a", "n"): 3}
    r = score_pairs(labels, pred, audio=True, encoder="x", seconds=0.0)
    l1, l2, l3 = r.levels
    assert (l1.predicted, l1.correct, l1.truth, l1.found) == (2, 1, 1, 1)    # a~a2 is a level-2 pair
    assert (l2.predicted, l2.correct, l2.truth, l2.found) == (1, 1, 2, 2)    # a~a2 found closer counts
    assert (l3.predicted, l3.correct) == (1, 0) and math.isnan(l3.recall)
    assert r.false_merges == 1 and r.hard_negative_pairs == 3 and r.hard_negative_merges["3"] == 1
