"""Candidate generation as pure functions over arrays: frame scores → the best tracks by their best frame,
and the exact path's proof step over int8 scores. The Library facade (search.py) feeds them its arrays.

Conventions: ``owner`` int64 (n_frames,) is the track row owning each frame (-1 = dead frame or a track a
filter leaves out); track rows returned are int64, scores float32, best first, ties to the lower row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExactPolicy:
    """When the query path takes which exact route. Passed to ``Library.open(policy=...)``.

    ``subset_frames``: a filter keeping at most this many frames is searched exactly instead of over-fetching.
    ``fp32_frames``: up to this many frames the exact path is a plain float32 scan (an int8 copy would not pay).
    ``build_after``: the int8 copy is built once this many exact queries are answered or asked for in one
    call. It costs about 25 float32 scans (1M x 512: 3.1 s vs 124 ms), so waiting for 16 keeps any run of
    exact queries within about twice the cost of the best choice made in hindsight (the ski-rental rule), and a
    one-off CLI query never pays for it.
    ``where_cache``: the ``where`` predicates whose track rows an open Library remembers.
    """

    subset_frames: int = 200_000
    fp32_frames: int = 50_000
    build_after: int = 16
    where_cache: int = 32


def only_rows(owners: np.ndarray, allowed: np.ndarray, n_tracks: int) -> np.ndarray:
    """``owners`` (track rows, -1 = none) with every track not in ``allowed`` set to -1: a table lookup,
    where np.isin sorted both (1M frames, 25k allowed tracks: about 20 ms)."""
    keep = np.zeros(n_tracks + 1, bool)  # the extra last entry is what -1 looks up: never kept
    keep[allowed] = True
    return np.where(keep[owners], owners, -1)


def top_tracks(sims: np.ndarray, owner: np.ndarray, want: int, kf: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` best tracks by best frame from every frame's score: grouping only the top ``kf`` frames
    (and every frame tied with the last of them, so that ties go to the lower track row as in brute force,
    not to whichever one ``argpartition`` kept), ×4 until they cover ``want`` tracks or every frame."""
    n = len(sims)
    while True:
        if kf < n:
            cut = sims[np.argpartition(-sims, kf - 1)[kf - 1]]
            top = np.flatnonzero(sims >= cut)
        else:
            top = np.arange(n)
        cand, cand_scores = best_per_track(owner[top], sims[top], want)
        if len(cand) >= want or kf >= n:
            return cand, cand_scores
        kf *= 4


def best_per_track(owners: np.ndarray, scores: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Group frame hits by owning track (skipping -1) → the ``want`` best tracks by their best frame."""
    keep = owners >= 0
    owners, scores = owners[keep], scores[keep]
    if len(owners) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.lexsort((owners, -scores))
    owners, scores = owners[order], scores[order]
    _, first = np.unique(owners, return_index=True)
    first = np.sort(first)[:want]
    return owners[first], scores[first].astype(np.float32)


def rows_to_rescore(approx: np.ndarray, margin: float, owner: np.ndarray, want: int, first_frames: int
                    ) -> np.ndarray | None:
    """The exact path's proof step. ``approx`` float32 (n_frames,): int8 scores, each within ``margin`` of
    its float32 score (frames whose owner is -1 are set to -inf in place). Returns the frame rows (int64)
    whose float32 scores decide the ``want`` best tracks: ranking them by float32 score gives exactly float32
    brute force's answer. None when there is no cheap
    proof (fewer live tracks than ``want``, or more than 1/8 of the frames too close to call).

    b is the want-th track's int8 score (its best frame's), found among the frames above a threshold
    guessed from a 1/64 sample, lowered until those frames cover ``want`` tracks. The want-th track's float32
    score is at least b - m, so a frame can only matter if its int8 score is at least b - 2m, and, to be its
    own track's best, within 2m of that track's best int8 score."""
    approx[owner < 0] = -np.inf  # in place: the scanner's buffer is ours to overwrite
    sample = approx[::64]
    j = max(1, first_frames // 64)
    while True:
        t = np.partition(sample, len(sample) - j)[len(sample) - j] if j < len(sample) else -np.inf
        rows = np.flatnonzero(approx >= t)
        _, best = best_per_track(owner[rows], approx[rows], want)
        if len(best) >= want or t == -np.inf:
            break
        j *= 4
    if len(best) < want:
        return None
    rows = np.flatnonzero(approx >= best[-1] - 2 * margin)
    if len(rows) > len(approx) // 8:
        return None
    owners, a = owner[rows], approx[rows]
    uniq, inv = np.unique(owners, return_inverse=True)
    track_best = np.full(len(uniq), -np.inf, np.float32)
    np.maximum.at(track_best, inv, a)
    return rows[a >= track_best[inv] - 2 * margin]
