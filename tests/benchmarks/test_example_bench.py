"""`songseek bench example`: ranks of each excerpt's own track against plain loops, rows and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from songseek.benchmarks.example_bench import METHODS, excerpt_ranks, rank_of, run_example_bench
from songseek.cli.main import app
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from tests.engine.test_align import naive_align, naive_hedged, poolings


def test_rank_of_is_pessimistic() -> None:
    s = np.array([0.5, 0.9, 0.5, 0.1])
    assert [rank_of(s, i) for i in range(4)] == [3, 1, 3, 4]  # the tie at 0.5 counts against both


def test_excerpt_ranks_match_plain_loops() -> None:
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 9, size=15)
    tracks = np.zeros((15, int(lengths.max()), 16), np.float32)
    for b, n in enumerate(lengths):
        tracks[b, :n] = l2_normalize(rng.standard_normal((n, 16)).astype(np.float32))
    own = 6
    excerpt = l2_normalize(tracks[own, :3] + 0.8 * rng.standard_normal((3, 16)).astype(np.float32))
    got = excerpt_ranks(excerpt, tracks, lengths, own)
    q = excerpt.mean(axis=0) / np.linalg.norm(excerpt.mean(axis=0))
    pooled = [[float(tracks[b, t] @ q) for t in range(n)] for b, n in enumerate(lengths)]
    windows = [(excerpt @ tracks[b, :n].T).astype(np.float64) for b, n in enumerate(lengths)]
    aligned = [naive_align(w, int(n))[0] for w, n in zip(windows, lengths)]
    pools = [poolings(w) for w in windows]
    hedged = naive_hedged(aligned, [[p[0] for p in pools], [p[1] for p in pools]])
    hedged_score = {row: sc for row, sc in hedged}

    def rank(values: list[float]) -> int:
        return 1 + sum(v >= values[own] for i, v in enumerate(values) if i != own)

    assert got["mean"] == rank([sum(p) / len(p) for p in pooled])
    assert got["max"] == rank([max(p) for p in pooled])
    assert got["align only"] == rank(aligned)
    assert got["auto"] == rank([hedged_score[b] for b in range(15)])
    assert set(got) == set(METHODS)


def test_rows_cover_every_length_and_noise_level_with_the_tracks_long_enough() -> None:
    report = run_example_bench(FakeEncoder(), [3], 3, lengths_s=(15.0, 25.0), per_track=2)
    assert [(r.length_s, r.snr_db) for r in report.rows] == [(15.0, None), (15.0, 10.0), (25.0, None), (25.0, 10.0)]
    for r in report.rows:
        assert len(r.groups) == 2 * 3  # every generated track lasts 30 s or more
        assert all(1 <= v.min() and v.max() <= 3 for v in r.ranks.values())
        d, lo, hi = r.delta()
        assert lo <= d <= hi
    js = report.to_json()
    assert js["tracks_per_seed"] == 3 and len(js["rows"]) == 4 and set(js["rows"][0]["recall"]) == set(METHODS)


@pytest.mark.parametrize("kwargs", [{"n_tracks": 1}, {"per_track": 0}, {"lengths_s": (10.0,)}, {"seeds": []}])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    args = {"seeds": [3], "n_tracks": 3, "lengths_s": (15.0,), "per_track": 1} | kwargs
    with pytest.raises(UsageError):
        run_example_bench(FakeEncoder(), **args)


def test_cli_prints_json_rows_and_refuses_a_bad_list() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["bench", "example", "--seeds", "3", "--tracks", "2", "--lengths", "15",
                              "--per-track", "1", "--encoder", "fake", "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["rows"]
    assert [(r["length_s"], r["snr_db"], r["queries"]) for r in rows] == [(15.0, None, 2), (15.0, 10.0, 2)]
    bad = runner.invoke(app, ["bench", "example", "--seeds", "a,b", "--encoder", "fake"])
    assert bad.exit_code == 2 and "--seeds and --lengths take comma lists" in bad.output
