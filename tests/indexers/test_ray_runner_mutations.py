"""The Ray runner's pure logic, run in this process without a cluster (found by a mutation sweep): the
address parsing, pool sizing, the decode task's blocks, the actor's output and how the driver absorbs it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import SongseekError, UsageError
from songseek.indexers.ray_runner import (
    DecodeSpec,
    EmbedActor,
    RayOptions,
    _threads_env,
    absorb_vectors,
    decode_task,
    pool_size,
    probe_address,
    ray_error_line,
)
from songseek.indexers.sources import SourceFile
from songseek.indexers.stages import decode_windows
from tests.indexers.ray_helpers import make_music

# --- the address --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "host", "port"), [
    ("10.0.0.7:7000", "10.0.0.7", 7000),
    ("ray://10.0.0.7:7000", "10.0.0.7", 7000),
    ("headnode", "headnode", 6379),             # no port: the GCS default
    ("ray://headnode", "headnode", 10001),      # no port, Ray Client: its default
    ("[::1]:7000", "::1", 7000),                # IPv6: the last colon splits off the port
])
def test_probe_address_connects_to_the_host_and_port_meant(monkeypatch: pytest.MonkeyPatch, address: str,
                                                           host: str, port: int) -> None:
    calls: list[tuple[Any, ...]] = []

    class Conn:
        def close(self) -> None:
            calls.append(("closed",))

    def fake(addr: tuple[str, int], timeout: float) -> Conn:
        calls.append((addr, timeout))
        return Conn()

    monkeypatch.setattr(socket, "create_connection", fake)
    probe_address(address, timeout_s=1.5)
    assert calls == [((host, port), 1.5), ("closed",)]


@pytest.mark.parametrize("address", [":7000", "ray://:7000", "host:", "host:7o00"])
def test_probe_address_refuses_an_address_without_a_host_or_number(address: str) -> None:
    with pytest.raises(UsageError, match=r"give 'local', 'auto' \(a running cluster\) or host:port"):
        probe_address(address)


# --- the pool ------------------------------------------------------------------------------------------------

def test_pool_size_with_cpus_per_worker_and_fractional_gpus() -> None:
    # 2 actors x 2 CPUs + 1 to decode = 5 CPUs: 5 fit, 4 do not
    assert pool_size({"CPU": 5}, RayOptions(workers=2, cpus_per_worker=2.0)) == (2, 0.0)
    with pytest.raises(UsageError, match=r"2 embedding actor\(s\) reserve 4 CPU\(s\) and decoding needs 1 more; "
                                         r"the Ray cluster has 4"):
        pool_size({"CPU": 4}, RayOptions(workers=2, cpus_per_worker=2.0))
    # 3 GPUs, 2 per actor: one actor (never a fraction of one), 2 of the 3 GPUs used
    assert pool_size({"CPU": 8, "GPU": 3}, RayOptions(gpus_per_worker=2.0)) == (1, 2.0)
    # a quarter GPU each on 1 GPU: 4 actors, who need 4 CPUs and 1 to decode
    assert pool_size({"CPU": 5, "GPU": 1}, RayOptions(gpus_per_worker=0.25)) == (4, 0.25)
    with pytest.raises(UsageError, match=r"3 embedding actor\(s\) with 0.5 GPU\(s\) each need 1.5 GPUs; "
                                         r"the Ray cluster has 1"):
        pool_size({"CPU": 8, "GPU": 1}, RayOptions(workers=3, gpus_per_worker=0.5))


def test_threads_env_sets_every_threads_variable_or_none() -> None:
    assert _threads_env(0) is None and _threads_env(-1) is None
    assert _threads_env(1) == {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                            "OPENBLAS_NUM_THREADS": "1"}}


# --- one Ray error line ----------------------------------------------------------------------------------------

def test_ray_error_line_is_the_cause_and_its_first_non_blank_line() -> None:
    class Wrapped(Exception):
        def __init__(self, cause: BaseException | None) -> None:
            super().__init__("Traceback (most recent call last):\n  noise")
            self.cause = cause

    assert ray_error_line(Wrapped(MemoryError("\n\n  out of memory on node 3  \nmore\n"))) == \
        "MemoryError: out of memory on node 3"
    assert ray_error_line(Wrapped(None)) == "Wrapped: Traceback (most recent call last):"
    assert ray_error_line(Wrapped(KeyError())) == "KeyError"
    assert ray_error_line(ValueError("   \n")) == "ValueError"


# --- the decode task's blocks -----------------------------------------------------------------------------------

def _batch(files: list[Path]) -> dict[str, np.ndarray]:
    return {"job": np.arange(len(files)), "path": np.array([str(f) for f in files], dtype=object),
            "size": np.array([f.stat().st_size for f in files]), "mtime": np.array([f.stat().st_mtime for f in files])}


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 50])
def test_decode_task_cuts_each_file_into_blocks_of_rows_and_counts_it_in_the_last(tmp_path: Path,
                                                                                 rows: int) -> None:
    files = make_music(tmp_path, [9.0, 4.0, 13.0])
    spec = DecodeSpec(16000, 4.0, 2.0, rows)
    blocks = list(decode_task(_batch(files), spec))
    for job, f in enumerate(files):
        want = list(decode_windows(SourceFile(f, f.stat().st_size, f.stat().st_mtime), 16000, 4.0, 2.0))
        mine = [b for b in blocks if set(b["job"].tolist()) == {job}]
        assert sum(len(b["n"]) for b in blocks if job in b["job"].tolist()) == len(want)  # no block mixes files
        sizes = [len(b["n"]) for b in mine]
        full, rest = divmod(len(want), rows)
        assert sizes == [rows] * full + ([rest] if rest else [])  # full blocks, never an empty last one
        assert [t for b in mine for t in b["total"].tolist()] == [0] * (len(want) - sizes[-1]) + [len(want)] * sizes[-1]
        assert [n for b in mine for n in b["n"].tolist()] == list(range(len(want)))
        assert [s for b in mine for s in b["start_s"].tolist()] == [s for _, s, _ in want]
        assert [e for b in mine for e in b["end_s"].tolist()] == [e for _, _, e in want]
        np.testing.assert_array_equal(np.concatenate([b["samples"] for b in mine]), np.stack([w for w, _, _ in want]))
        assert all(not b["missing"].any() and set(b["error"].tolist()) == {""} for b in mine)


def test_decode_task_gives_one_error_row_per_failed_file_and_says_whether_it_exists(tmp_path: Path) -> None:
    good, garbage = make_music(tmp_path, [5.0])[0], tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    gone = tmp_path / "gone.wav"
    batch = _batch([good, garbage])
    batch = {k: np.concatenate([v, v[1:]]) for k, v in batch.items()}
    batch["job"] = np.array([0, 1, 2])
    batch["path"][2] = str(gone)
    blocks = list(decode_task(batch, DecodeSpec(16000, 4.0, 2.0, 10)))
    errors = {int(b["job"][0]): b for b in blocks if b["error"][0]}
    assert sorted(errors) == [1, 2]
    for job, path, missing in ((1, garbage, False), (2, gone, True)):
        b = errors[job]
        assert len(b["n"]) == 1 and b["n"][0] == -1 and b["total"][0] == 0
        assert b["missing"][0] == missing
        assert b["error_class"][0] and str(path) in b["error"][0] and "\n" not in b["error"][0]
        assert b["samples"].shape == (1, 4 * 16000) and not b["samples"].any()


# --- the actor and the driver --------------------------------------------------------------------------------

def test_the_actor_embeds_the_ok_rows_and_leaves_zero_vectors_for_error_rows(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import songseek.indexers.ray_runner as ray_runner

    real = ray_runner.embed_windows
    monkeypatch.setattr(ray_runner, "embed_windows", lambda enc, w: (real(enc, w)[0], 1.5))  # a model of 1.5 s
    files = make_music(tmp_path, [6.0])
    enc = FakeEncoder()
    spec = DecodeSpec(enc.info.sample_rate, 4.0, 2.0, 100)
    (block,) = decode_task(_batch(files), spec)
    k = len(block["n"])
    err = {key: np.concatenate([v[:1], v]) for key, v in block.items()}  # a failed row first
    err["error"] = np.array(["x: broken"] + [""] * k, dtype=object)
    err["error_class"] = np.array(["ValueError"] + [""] * k, dtype=object)
    table = EmbedActor(lambda device: FakeEncoder(), "cpu", enc.info)(err)
    assert table.num_rows == k + 1
    vectors = np.array(table.column("vector").to_pylist(), np.float32)
    assert not vectors[0].any()
    np.testing.assert_allclose(vectors[1:], np.asarray(enc.embed_audio(block["samples"]), np.float32), rtol=1e-5,
                               atol=1e-6)
    assert table.column("error").to_pylist() == ["x: broken"] + [""] * k
    assert table.column("n").to_pylist() == [block["n"][0], *block["n"].tolist()]
    seconds = table.column("model_s").to_pylist()
    assert seconds == pytest.approx([1.5 / (k + 1)] * (k + 1))  # the batch's model time, shared out evenly


class _Commit:
    """Records what absorb_vectors hands the commit stage (a CommitStage's interface, as calls)."""

    def __init__(self, paths: list[str]) -> None:
        self.jobs = [type("Job", (), {"path": p})() for p in paths]
        self.report = type("Report", (), {"model_seconds": 0.0})()
        self.calls: list[tuple[Any, ...]] = []

    def fail(self, i: int, cls: str, msg: str) -> None:
        self.calls.append(("fail", i, cls, msg))

    def window(self, i: int, n: int, s: float, e: float) -> None:
        self.calls.append(("window", i, n, s, e))

    def vector(self, i: int, n: int, vec: np.ndarray) -> None:
        self.calls.append(("vector", i, n, vec.tolist()))

    def decoded(self, i: int, total: int, length_s: float | None = None) -> None:
        self.calls.append(("decoded", i, total, length_s))


def _table(rows: list[dict[str, Any]], dim: int) -> pa.Table:
    cols = {k: pa.array([r[k] for r in rows]) for k in ("job", "n", "start_s", "end_s", "total", "length_s",
                                                          "error_class", "error", "missing")}
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.array([r["vector"] for r in rows],
                                                                         np.float32).reshape(-1)), dim)
    cols["model_s"] = pa.array([r["model_s"] for r in rows])
    return pa.table(cols)


def _row(job: int, n: int, total: int = 0, error: str = "", missing: bool = False, v: float = 1.0,
         length_s: float = 0.0) -> dict[str, Any]:
    return {"job": job, "n": n, "start_s": 2.0 * n, "end_s": 2.0 * n + 4, "total": total, "length_s": length_s,
            "error_class": "OSError" if error else "", "error": error, "missing": missing,
            "vector": [v, -v], "model_s": 0.25}


def test_absorb_vectors_hands_windows_vectors_totals_and_failures_in_row_order(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.wav")
    commit = _Commit(["/a.wav", "/b.wav", gone])
    rows = [_row(0, 0, v=1.0), _row(1, 0, v=2.0), _row(0, 1, total=2, v=3.0, length_s=6.5),
            _row(2, -1, error=f"{gone}: gone", missing=True), _row(1, 1, total=2, v=4.0)]
    absorb_vectors(commit, _table(rows, 2), 2)  # type: ignore[arg-type]
    assert commit.calls == [
        ("window", 0, 0, 0.0, 4.0), ("vector", 0, 0, [1.0, -1.0]),
        ("window", 1, 0, 0.0, 4.0), ("vector", 1, 0, [2.0, -2.0]),
        ("window", 0, 1, 2.0, 6.0), ("vector", 0, 1, [3.0, -3.0]), ("decoded", 0, 2, 6.5),
        ("fail", 2, "OSError", f"{gone}: gone"),  # missing on the worker and here too: a real failure
        ("window", 1, 1, 2.0, 6.0), ("vector", 1, 1, [4.0, -4.0]), ("decoded", 1, 2, None),
    ]
    assert commit.report.model_seconds == pytest.approx(5 * 0.25)


def test_absorb_vectors_stops_on_a_file_only_the_worker_cannot_see(tmp_path: Path) -> None:
    here = tmp_path / "here.wav"
    here.write_bytes(b"x")
    commit = _Commit([str(here)])
    with pytest.raises(SongseekError, match="a Ray worker cannot see .*here.wav, which exists on this machine"):
        absorb_vectors(commit, _table([_row(0, -1, error="x", missing=True)], 2), 2)  # type: ignore[arg-type]
    assert commit.calls == []
    absorb_vectors(commit, _table([_row(0, -1, error="bad file", missing=False)], 2), 2)  # type: ignore[arg-type]
    assert commit.calls == [("fail", 0, "OSError", "bad file")]
