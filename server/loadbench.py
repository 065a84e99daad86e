"""`songseek bench serve`: a bounded loopback client against `songseek serve`, next to in-process search.

The library is synthetic (benchmarks/synthetic.py geometry) at the demo encoder's dimension and stamped
with the demo encoder, so both vector queries and text queries (embedded by the demo model) run. For
each query kind and client count the client sends a fixed number of requests over keep-alive connections
and records latency and status; the server's RSS is read from /proc before and after. In the same run the
same queries go through Library.search in this process (one at a time), so the overhead is a difference of
figures measured minutes apart on the same machine. Last, a server with one worker and a queue of one is
flooded by 32 clients to see that it sheds load with fast 503s.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from songseek.benchmarks.synthetic import SyntheticSpec, iter_tracks, make_queries, track_lengths
from songseek.engine.encoders import load_encoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

TEXTS = ["slow sad piano", "bright brass fanfare", "ambient pad with soft strings", "fast drums and bass",
         "warm acoustic guitar", "plucked strings over a drone", "airy flute melody", "dark synth arpeggio"]


@dataclass(frozen=True)
class LoadConfig:
    frames: int = 100_000
    requests: int = 2_000
    concurrency: tuple[int, ...] = (1, 8, 32)
    kinds: tuple[str, ...] = ("vector", "text")
    k: int = 10
    work: Path = Path("~/.cache/songseek/bench").expanduser()
    workers: int = 2
    queue: int = 64
    soak: int = 0           # requests in the memory run at soak_clients (0: none)
    soak_clients: int = 32


def build(spec: SyntheticSpec, root: Path) -> Path:
    """The synthetic library at ``root`` stamped with the demo encoder (built once, then reused)."""
    stamp = root / "spec.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    info = load_encoder("demo", None, "cpu").info
    lengths = track_lengths(spec)
    with LibraryWriter(root, Manifest(encoder=info, window_s=spec.hop_s, hop_s=spec.hop_s)) as writer:
        for first, frames in iter_tracks(spec):
            offset = 0
            for i in range(first, min(first + 4096, len(lengths))):
                n = int(lengths[i])
                starts = np.arange(n, dtype=np.float64) * spec.hop_s
                writer.add_track(TrackRecord(track_id=f"t{i:08d}", path=f"synthetic/t{i:08d}.wav",
                                             duration_s=n * spec.hop_s, title=f"track {i}",
                                             artist=f"artist {i % 997}"),
                                 frames[offset:offset + n], starts, starts + spec.hop_s)
                offset += n
            writer.commit()
        writer.update_index("auto")
    stamp.write_text(json.dumps(asdict(spec)))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, every thread (Linux /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB (Linux)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


class Server:
    """`songseek serve` in a child process on a free loopback port."""

    def __init__(self, library: Path, workers: int, queue: int) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-c", "from songseek.cli.main import app; app()", "serve", "--library", str(library),
               "--port", str(self.port), "--workers", str(workers), "--queue", str(queue)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.proc.stderr.read().decode()[-500:] if self.proc.stderr else ""
                raise UsageError(f"songseek serve exited: {tail}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/api/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise UsageError("songseek serve did not answer within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


Request = tuple[str, str, bytes | None]  # method, path, body


def _requests(kind: str, vectors: np.ndarray, k: int) -> list[Request]:
    if kind == "vector":
        return [("POST", f"/api/search/batch?k={k}", json.dumps({"vectors": [v.tolist()]}).encode()) for v in vectors]
    return [("GET", f"/api/search?k={k}&q={quote(t)}", None) for t in TEXTS]


def drive(port: int, reqs: list[Request], total: int, clients: int) -> dict[str, float]:
    """``total`` requests from ``clients`` threads (each its own keep-alive connection), round-robin over
    ``reqs``: latency percentiles (ms), the overhead (latency minus the engine time the server reports in
    Server-Timing), throughput, and counts by outcome."""
    lat = np.zeros(total)
    engine = np.full(total, np.nan)
    status = np.zeros(total, dtype=np.int64)
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            method, path, body = reqs[i % len(reqs)]
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                resp = conn.getresponse()
                resp.read()
                status[i] = resp.status
                timing = resp.getheader("server-timing") or ""
                if "dur=" in timing:
                    engine[i] = float(timing.split("dur=")[1])
            except (OSError, http.client.HTTPException):
                status[i] = -1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            lat[i] = (time.perf_counter() - t0) * 1000
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = status == 200
    busy = status == 503

    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if len(x) else float("nan")

    over = (lat - engine)[ok & np.isfinite(engine)]
    return {"p50_ms": pct(lat[ok], 50), "p99_ms": pct(lat[ok], 99), "engine_p50_ms": pct(engine[ok], 50),
            "overhead_p50_ms": pct(over, 50), "overhead_p99_ms": pct(over, 99),
            "busy_p50_ms": pct(lat[busy], 50), "busy_max_ms": float(lat[busy].max()) if busy.any() else float("nan"),
            "qps": float(ok.sum() / wall), "ok": int(ok.sum()), "busy_503": int(busy.sum()),
            "errors": int((~ok & ~busy).sum())}


def in_process(lib: Library, kind: str, vectors: np.ndarray, k: int, total: int) -> tuple[np.ndarray, float]:
    """Latencies (ms) of the same queries through Library.search in this process, one at a time, and the CPU
    seconds the process spent on them."""
    opts = SearchOptions(k=k)
    lat = np.zeros(total)
    cpu0 = time.process_time()
    for i in range(total):
        t0 = time.perf_counter()
        if kind == "vector":
            lib.search_vectors(vectors[i % len(vectors)][None], opts)
        else:
            lib.search(TEXTS[i % len(TEXTS)], options=opts)
        lat[i] = (time.perf_counter() - t0) * 1000
    return lat, time.process_time() - cpu0


def soak(server: Server, reqs: list[Request], total: int, clients: int) -> dict[str, object]:
    """``total`` requests at ``clients`` (bounded: it stops when they are answered) with the server's RSS
    sampled every half second: start, end, peak, and the growth over the second half (after warm-up)."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(0.5):
            samples.append((time.perf_counter() - t0, _rss_mb(server.proc.pid)[0]))

    rss0, _ = _rss_mb(server.proc.pid)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    res = drive(server.port, reqs, total, clients)
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    rss1, hwm = _rss_mb(server.proc.pid)
    mid = [r for t, r in samples if t >= wall / 2] or [rss1]
    return {**res, "wall_s": wall, "rss_start_mb": rss0, "rss_end_mb": rss1, "rss_peak_mb": hwm,
            "rss_mid_mb": mid[0], "rss_growth_second_half_mb": rss1 - mid[0]}


ROUNDS = 5  # in-process and one-client server blocks alternate, so machine load drifts hit both alike


def run_load(cfg: LoadConfig, echo: Callable[[str], None]) -> dict[str, object]:
    for kind in cfg.kinds:
        if kind not in ("vector", "text"):
            raise UsageError(f"unknown query kind {kind!r}: use vector or text")
    spec = SyntheticSpec(n_frames=cfg.frames, dim=128, seed=0)
    root = build(spec, cfg.work / f"serve-{spec.key()}")
    vectors = make_queries(spec, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(root)
    report: dict[str, object] = {"frames": cfg.frames, "tracks": lib.n_tracks, "requests": cfg.requests,
                                 "cpus": os.cpu_count(), "runs": []}
    runs: list[dict[str, object]] = []
    echo(f"library: {lib.n_tracks} tracks, {cfg.frames} frames, index {lib.manifest.index_description}")
    server = Server(root, cfg.workers, cfg.queue)
    try:
        for kind in cfg.kinds:
            reqs = _requests(kind, vectors, cfg.k)
            in_process(lib, kind, vectors, cfg.k, 20)  # warm caches and the encoder on both sides
            drive(server.port, reqs, 50, 1)
            local, block, cpu_local, cpu_server, served = [], max(1, cfg.requests // ROUNDS), 0.0, 0.0, 0
            for _ in range(ROUNDS):
                lat_block, cpu = in_process(lib, kind, vectors, cfg.k, block)
                local.append(lat_block)
                cpu_local += cpu
                if 1 in cfg.concurrency:
                    c0 = _cpu_s(server.proc.pid)
                    one = drive(server.port, reqs, block, 1)
                    cpu_server += _cpu_s(server.proc.pid) - c0
                    served += int(one["ok"])
                    runs.append({"kind": kind, "where": "server-block", "clients": 1, **one})
            lat = np.concatenate(local)
            base = {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                    "qps": float(len(lat) / lat.sum() * 1000), "cpu_ms_per_query": cpu_local / len(lat) * 1000,
                    "server_cpu_ms_per_query": cpu_server / max(served, 1) * 1000}
            runs.append({"kind": kind, "where": "in-process", "clients": 1, **base})
            echo(f"in-process {kind} (one at a time, interleaved with the x1 server blocks): p50 "
                 f"{base['p50_ms']:.2f} ms  p99 {base['p99_ms']:.2f} ms  {base['qps']:.0f} q/s; CPU per query "
                 f"{base['cpu_ms_per_query']:.2f} ms in-process vs {base['server_cpu_ms_per_query']:.2f} ms in the "
                 f"server process (x1)")
            for clients in cfg.concurrency:
                rss0, _ = _rss_mb(server.proc.pid)
                res = drive(server.port, reqs, cfg.requests, clients)
                rss1, hwm = _rss_mb(server.proc.pid)
                row = {"kind": kind, "where": "server", "clients": clients, **res, "rss_before_mb": rss0,
                       "rss_after_mb": rss1, "rss_peak_mb": hwm}
                runs.append(row)
                echo(f"server {kind} x{clients}: p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  "
                     f"(engine p50 {res['engine_p50_ms']:.2f}, overhead p50 {res['overhead_p50_ms']:.2f} "
                     f"p99 {res['overhead_p99_ms']:.2f})  {res['qps']:.0f} q/s  ok {res['ok']}  "
                     f"503 {res['busy_503']}  errors {res['errors']}  RSS {rss0:.0f} → {rss1:.0f} MiB "
                     f"(peak {hwm:.0f})")
            if cfg.soak:
                row = soak(server, reqs, cfg.soak, cfg.soak_clients)
                runs.append({"kind": kind, "where": "soak", "clients": cfg.soak_clients, **row})
                echo(f"soak {kind} x{cfg.soak_clients}, {cfg.soak:,} requests in {row['wall_s']:.0f} s: "
                     f"ok {row['ok']}  503 {row['busy_503']}  errors {row['errors']}  p50 {row['p50_ms']:.1f} ms  p99 "
                     f"{row['p99_ms']:.1f} ms  RSS start {row['rss_start_mb']:.1f} → end {row['rss_end_mb']:.1f} MiB "
                     f"(peak {row['rss_peak_mb']:.1f}; second half {row['rss_mid_mb']:.1f} → "
                     f"{row['rss_end_mb']:.1f})")
            blocks = [r for r in runs if r["where"] == "server-block" and r["kind"] == kind]
            if blocks:
                p50s = [float(str(r["p50_ms"])) for r in blocks]
                echo(f"  x1 server blocks p50 {np.median(p50s):.2f} ms vs in-process p50 {base['p50_ms']:.2f} ms: "
                     f"difference {np.median(p50s) - base['p50_ms']:+.2f} ms")
    finally:
        server.stop()
    small = Server(root, workers=1, queue=1)
    try:
        reqs = _requests(cfg.kinds[0], vectors, cfg.k)
        res = drive(small.port, reqs, min(cfg.requests, 2000), 32)
        runs.append({"kind": cfg.kinds[0], "where": "overloaded (1 worker, queue 1)", "clients": 32, **res})
        echo(f"overloaded server (1 worker, queue 1) x32: ok {res['ok']} (p50 {res['p50_ms']:.1f} ms)  "
             f"503 {res['busy_503']} (p50 {res['busy_p50_ms']:.2f} ms, max {res['busy_max_ms']:.1f} ms)  "
             f"errors {res['errors']}")
    finally:
        small.stop()
    # NaN (no 503s, no engine header) becomes null, so --json stays strict JSON
    report["runs"] = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in runs]
    return report
