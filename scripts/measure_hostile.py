"""Figures for docs/robustness.md, "Hostile input": how fast a runaway filter is stopped, what the syntax-tree
check costs per filter, and the peak memory of query-by-example decoding (an excerpt vs the whole file).

    python scripts/measure_hostile.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa

from songseek.engine.errors import QueryError
from songseek.engine.query.filters import FilterLimits, filter_track_ids

SLOW = "EXISTS (SELECT 1 FROM tracks t2 WHERE levenshtein(t2.path, tracks.path) = 1000)"


def filters() -> None:
    n = 20_000
    tables = {"tracks": pa.table({"track_id": [f"t{i}" for i in range(n)],
                                  "path": [f"/m/{i:08d}.wav" for i in range(n)], "year": np.arange(n) % 60 + 1960})}
    for limit in (0.1, 0.5, 2.0):
        t0 = time.perf_counter()
        try:
            filter_track_ids(tables, SLOW, FilterLimits(timeout_s=limit))
        except QueryError:
            pass
        print(f"filter timeout_s={limit}: stopped after {time.perf_counter() - t0:.3f} s")
    ok = "year < 1970 AND path LIKE '%5.wav'"
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        filter_track_ids(tables, ok)
        times.append(time.perf_counter() - t0)
    print(f"an ordinary filter over {n} tracks (parse + check + run): median {1000 * np.median(times):.1f} ms")


def _peak_decode(path: Path, start: float, end: float | None) -> float:
    code = ("import resource, sys; from pathlib import Path; from songseek.engine.audio import decode; "
            f"a = decode(Path({str(path)!r}), 48000, {start}, {end}); "
            "print(len(a) / 48000, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[1])


def decoding(minutes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sr = 8000
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            block = (3000 * np.sin(np.arange(sr * 60) * 0.05)).astype(np.int16).tobytes()
            for _ in range(minutes):
                w.writeframes(block)
        whole = _peak_decode(path, 0.0, None)
        excerpt = _peak_decode(path, 600.0, 660.0)
        print(f"decode a {minutes}-min WAV to 48 kHz: whole file peak RSS {whole:.0f} MB; "
              f"60 s excerpt at 10 min (the query-by-example default cap) {excerpt:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; peak RSS of this process so far "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    filters()
    decoding(args.minutes)
