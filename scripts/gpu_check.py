"""Every GPU path of songseek in one bounded run, for a bare GPU machine with no network (issue 15).

    scripts/gpu-check --prepare              # here, with PyPI: wheels + CLAP config + audio into scripts/
    scripts/gpu-check OUT                    # there: install the wheels, run every check, OUT/gpu-check.json
    scripts/gpu-check --dry-run OUT          # anywhere, CPU only, tiny sizes (CI runs this)

The machine is assumed to have torch and transformers but not faiss, duckdb, av, soxr or mutagen: the
wheels that fit in 64 MiB travel in scripts/wheels/ (faiss-cpu, av, soxr, mutagen; duckdb does not fit
beside them and is only needed for --where filters; no FAISS GPU wheel fits: faiss-gpu-cu12 is 46 MiB and
needs CUDA 12's cuBLAS, 375 MiB). Each step is timed and written to the report as soon as it ends, so a
run stopped at its limit still leaves what it measured. No step asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / "scripts" / "wheels"
DATA = REPO / "scripts" / "gpu-data"
SHARED_CANDIDATES = [DATA, REPO / "shared" / "data", REPO.parent / "shared" / "data"]
WHEEL_PACKAGES = ["faiss-cpu", "av", "soxr", "mutagen"]
BUDGET_MIB = 64.0          # what the device tool carries: the working tree plus carried paths
TIME_LIMIT_S = 8 * 60      # the whole check, wheels included
COSINE_MIN = 0.999


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- making songseek importable without installing it -------------------------------------------------

def ensure_songseek(tmp: Path) -> str:
    """Import songseek from an install if there is one, else from a tree of links that mirrors
    pyproject's package-dir map (the device has setuptools but no network for build isolation)."""
    try:
        import songseek  # noqa: F401

        return "installed"
    except ImportError:
        pass
    import tomllib

    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = tmp / "src"
    pkg = root / "songseek"
    shutil.copytree(REPO / dirs["songseek"], pkg)
    for name, folder in dirs.items():
        if name != "songseek":
            (root / name.replace(".", "/")).symlink_to(REPO / folder, target_is_directory=True)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    return f"linked tree at {root}"


def install_wheels(target: Path) -> dict[str, Any]:
    wheels = sorted(WHEELS.glob("*.whl"))
    info: dict[str, Any] = {"dir": str(WHEELS), "wheels": [w.name for w in wheels],
                            "mib": round(sum(w.stat().st_size for w in wheels) / 2**20, 2)}
    if not wheels:
        info["note"] = "no wheels brought along: run `scripts/gpu-check --prepare` where PyPI is reachable"
        return info
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    info["rc"] = proc.returncode
    if proc.returncode:
        info["stderr"] = proc.stderr[-2000:]
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    return info


# -- inputs -------------------------------------------------------------------------------------------

def shared_dir(name: str) -> Path | None:
    for base in SHARED_CANDIDATES:
        if (base / name).is_dir():
            return base / name
    return None


def tiny_clap_dir(tmp: Path) -> Path:
    """A ClapConfig small enough for a CPU dry run, saved where load_encoder can read it."""
    from transformers import ClapConfig

    audio = {"patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [2, 4],
             "hidden_size": 32, "enable_fusion": False, "window_size": 8}
    text = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1,
            "intermediate_size": 37, "max_position_embeddings": 80}
    out = tmp / "tiny-clap"
    ClapConfig(text_config=text, audio_config=audio, projection_dim=24).save_pretrained(out)
    return out


def write_wav(path: Path, audio: Any, sr: int) -> None:
    """16-bit mono PCM WAV with the standard library (no codec package needed)."""
    import wave

    import numpy as np

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def synthetic_sources(folder: Path, n_files: int, seconds: float, sr: int = 44_100, seed: int = 0) -> Path:
    """Seeded tones plus noise as WAV files at 44.1 kHz (so the indexer resamples), distinct per file."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n_files):
        f = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        audio = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t))
        write_wav(folder / f"synth-{i:03d}.wav", audio.astype(np.float32), sr)
    return folder


def real_sources(folder: Path, audio_dir: Path, copies: int) -> Path:
    """``copies`` copies of the real recordings, each with its own title tag (so a different content hash:
    the indexer sees new files, and decodes Vorbis as it would for a real library)."""
    import mutagen

    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in audio_dir.iterdir() if p.suffix in (".ogg", ".flac", ".mp3", ".wav"))
    for c in range(copies):
        for p in files:
            dst = folder / f"{p.stem}-copy{c:03d}{p.suffix}"
            shutil.copyfile(p, dst)
            tags = mutagen.File(dst)
            if tags is not None:
                if tags.tags is None:
                    tags.add_tags()
                tags["title"] = f"{p.stem} copy {c}"
                tags.save()
    return folder


# -- steps ----------------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, dry: bool, tmp: Path, device: str) -> None:
        self.dry, self.tmp, self.device = dry, tmp, device
        self.encoder: Any = None
        self.windows: Any = None
        self.audio_dir = None if dry else shared_dir("audio")
        self.clap_dir = None if dry else shared_dir("clap-htsat-fused")


def step_tests(ctx: Ctx) -> dict[str, Any]:
    """The CUDA variants of the test suite (parametrised `device` tests; skipped without CUDA)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
            "--continue-on-collection-errors", "tests/engine"]
    if ctx.dry:
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "--collect-only",
                "tests/engine/test_encoders_clap.py"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=240)
    # stderr too: "No module named pytest" (a venv without the dev extras) is only said there
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return {"command": " ".join(args[1:]), "rc": proc.returncode, "summary": lines[-1] if lines else "",
            "tail": "\n".join(lines[-15:]), "ok": proc.returncode == 0}


def _cosines(a: Any, b: Any) -> tuple[float, float]:
    import numpy as np

    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(cos.mean())


def step_embed(ctx: Ctx) -> dict[str, Any]:
    """The CLAP architecture on the device in fp32, then under bf16 and fp16 autocast: cosine vs fp32."""
    import numpy as np
    import torch

    from songseek.engine.encoders import load_encoder

    ckpt = str(ctx.clap_dir) if ctx.clap_dir else str(tiny_clap_dir(ctx.tmp)) if ctx.dry else None
    ctx.encoder = enc = load_encoder("clap", ckpt, ctx.device, True)
    sr = enc.info.sample_rate
    if ctx.audio_dir is not None:
        from songseek.benchmarks.speed import decode_all

        files = sorted(p for p in ctx.audio_dir.iterdir() if p.suffix == ".ogg")
        windows, source = decode_all(files, sr, 10.0, 10.0), f"real: {len(files)} files in {ctx.audio_dir}"
    else:
        from songseek.benchmarks.speed import decode_all

        folder = synthetic_sources(ctx.tmp / "embed-audio", 2, 25.0)
        windows, source = decode_all(sorted(folder.iterdir()), sr, 10.0, 10.0), "synthetic tones (WAV)"
    ctx.windows = windows
    out: dict[str, Any] = {"checkpoint": ckpt or "ClapConfig() default", "random_weights": True,
                           "audio": source, "windows": int(len(windows)), "dim": enc.info.dim}
    ref = np.concatenate([enc.embed_audio(windows[i:i + 16]) for i in range(0, len(windows), 16)])
    kind = "cuda" if ctx.device.startswith("cuda") else "cpu"
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if kind == "cpu" and dtype is torch.float16:
            continue  # CPU autocast is bfloat16 only in practice
        with torch.autocast(kind, dtype=dtype):
            got = np.concatenate([enc.embed_audio(windows[i:i + 16]) for i in range(0, len(windows), 16)])
        lo, mean = _cosines(ref, got)
        out[f"cosine_{name}_min"], out[f"cosine_{name}_mean"] = lo, mean
        out[f"{name}_ok"] = bool(lo >= COSINE_MIN)
    return out


class AutocastEncoder:
    """An Encoder whose embed_audio runs under autocast on whichever thread calls it (autocast is
    thread-local, and the indexer embeds on its own model thread)."""

    def __init__(self, inner: Any, device_type: str, dtype: Any) -> None:
        self.inner, self.device_type, self.dtype = inner, device_type, dtype

    @property
    def info(self) -> Any:
        return self.inner.info

    def embed_audio(self, windows: Any) -> Any:
        import torch

        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.inner.embed_audio(windows)

    def embed_text(self, texts: list[str]) -> Any:
        return self.inner.embed_text(texts)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_throughput(ctx: Ctx) -> dict[str, Any]:
    """Model-only windows/s (fp32, bf16) at a GPU-sized batch, then end to end through `index_paths` with
    the decode workers, and which of the two is the bottleneck."""
    import numpy as np
    import torch

    from songseek.benchmarks.speed import run_index_speed

    enc = ctx.encoder
    batch = 8 if ctx.dry else 128
    reps = 2 if ctx.dry else 8
    wins = np.concatenate([ctx.windows] * max(1, -(-batch // len(ctx.windows))))[:batch]
    out: dict[str, Any] = {"batch_size": batch}
    kind = "cuda" if ctx.device.startswith("cuda") else "cpu"
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = enc if dtype is None else AutocastEncoder(enc, kind, dtype)
        model.embed_audio(wins)  # warm-up (kernels, allocator)
        _sync(ctx.device)
        t0 = time.perf_counter()
        for _ in range(reps):
            model.embed_audio(wins)
        _sync(ctx.device)
        out[f"model_only_wps_{name}"] = batch * reps / (time.perf_counter() - t0)
    workers = 2 if ctx.dry else max(1, min(15, (os.cpu_count() or 2) - 1))
    if ctx.audio_dir is not None:
        src = real_sources(ctx.tmp / "e2e", ctx.audio_dir, copies=40)
        out["sources"] = f"40 tagged copies of {ctx.audio_dir}"
    else:
        src = synthetic_sources(ctx.tmp / "e2e", 3 if ctx.dry else 200, 20.0 if ctx.dry else 60.0, seed=1)
        out["sources"] = "synthetic WAV"
    fast = AutocastEncoder(enc, kind, torch.bfloat16)
    r = run_index_speed([src], fast, batch_size=batch, workers=workers, work=ctx.tmp, repeats=1)
    out.update({"workers": workers, "windows": r.windows, "end_to_end_wps_bf16": r.end_to_end_windows_per_s,
                "model_only_wps_bf16_same_windows": r.model_only_windows_per_s,
                "decode_wps_one_thread": r.decode_windows_per_s, "ratio": r.ratio,
                "model_in_pipeline_s": r.model_in_pipeline_s, "end_to_end_s": r.end_to_end_s})
    feed = r.decode_windows_per_s * workers  # what the decode threads can supply, at best
    if r.ratio >= 0.9:
        out["bottleneck"] = "model (end to end within 10% of model-only)"
    elif feed < r.model_only_windows_per_s:
        out["bottleneck"] = (f"CPU decode feed: {workers} workers × {r.decode_windows_per_s:.0f} windows/s < "
                             f"model {r.model_only_windows_per_s:.0f} windows/s (mel is already on the GPU)")
    else:
        out["bottleneck"] = "pipeline overhead (decode feed would suffice): scan, hashing, commits, GIL"
    return out


def _p50_ms(fn: Callable[[], Any], n: int, device: str) -> float:
    import numpy as np

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def step_search(ctx: Ctx) -> dict[str, Any]:
    """FAISS GPU indices over n × 512 when the faiss build has GPU support; otherwise the same search as
    torch float16 matmul + top-k on the device; checked against float32 brute force on the CPU."""
    import numpy as np
    import torch

    n, dim, k, nq = (20_000 if ctx.dry else 1_000_000), 512, 100, 64
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    q = torch.nn.functional.normalize(x[:nq] + 0.8 * torch.randn(nq, dim, generator=g), dim=1)
    x_np, q_np = x.numpy(), q.numpy()
    out: dict[str, Any] = {"frames": n, "dim": dim, "k": k, "queries": nq}
    import faiss

    out["faiss_version"] = faiss.__version__
    gpu_faiss = ctx.device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") \
        and faiss.get_num_gpus() > 0
    out["faiss_gpu"] = bool(gpu_faiss)
    ref = np.argsort(-(q_np @ x_np.T), axis=1)[:, :k]  # float32 brute force on the CPU
    if gpu_faiss:  # pragma: no cover - needs faiss with GPU support
        from songseek.engine.storage import index as faiss_index

        res = faiss.StandardGpuResources()
        flat = faiss.GpuIndexFlatIP(res, dim)
        flat.add(x_np)
        out["gpu_flat_p50_ms_1q"] = _p50_ms(lambda: flat.search(q_np[:1], k), 50, "cpu")
        out["gpu_flat_p50_ms_64q"] = _p50_ms(lambda: flat.search(q_np, k), 10, "cpu")
        cpu_ivf = faiss.index_factory(dim, "IVF1024,Flat", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.index_cpu_to_gpu(res, 0, cpu_ivf)
        t0 = time.perf_counter()
        ivf.train(x_np[:65_536])
        ivf.add(x_np)
        out["gpu_ivf_build_s"] = time.perf_counter() - t0
        # the engine's call: nprobe per call (or set under its lock where a GPU class takes no parameters)
        out["gpu_ivf_p50_ms_1q"] = _p50_ms(lambda: faiss_index.search(ivf, q_np[:1], k, 32), 50, "cpu")
        _, rows = faiss_index.search(ivf, q_np, k, 32)
        out["gpu_ivf_recall_at_100"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rows, ref)]))
    else:
        out["faiss_gpu_note"] = ("no FAISS GPU wheel fits in 64 MiB (faiss-gpu-cu12 is 46 MiB and needs CUDA 12 "
                                 "cuBLAS, 375 MiB); timed torch search on the device instead")
    xd = x.to(ctx.device, torch.float16)
    qd = q.to(ctx.device, torch.float16)
    out["torch_fp16_p50_ms_1q"] = _p50_ms(lambda: torch.topk(qd[:1] @ xd.T, k), 50, ctx.device)
    out["torch_fp16_p50_ms_64q"] = _p50_ms(lambda: torch.topk(qd @ xd.T, k), 10, ctx.device)
    rows = torch.topk(qd @ xd.T, k).indices.cpu().numpy()
    out["torch_fp16_recall_at_100"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rows, ref)]))
    # The exact path: float16 scan for a shortlist, float32 re-score of it, as the CPU int8 path does.
    x32 = x.to(ctx.device)

    def exact(qi: Any) -> Any:
        cand = torch.topk(qi.half() @ xd.T, 4 * k).indices
        scores = x32[cand[0]] @ qi[0]
        return cand[0][torch.topk(scores, k).indices]

    q32 = q.to(ctx.device)
    out["exact_fp16_then_fp32_p50_ms"] = _p50_ms(lambda: exact(q32[:1]), 50, ctx.device)
    got = np.stack([exact(q32[i:i + 1]).cpu().numpy() for i in range(nq)])
    out["exact_recall_at_100"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, ref)]))
    out["gpu_memory_mib"] = (torch.cuda.max_memory_allocated() / 2**20) if ctx.device.startswith("cuda") else 0.0
    return out


STEPS: list[tuple[str, Callable[[Ctx], dict[str, Any]]]] = [
    ("tests", step_tests), ("embed", step_embed), ("throughput", step_throughput), ("search", step_search)]


# -- preparing the wheelhouse here ----------------------------------------------------------------------

def prepare() -> int:
    """Download the wheels (PyPI) and copy the CLAP config and as much real audio as fits in the budget."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    plat = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    for name in WHEEL_PACKAGES:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(WHEELS), name],
                       check=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tree = sum((REPO / f).stat().st_size for f in tracked.decode().split("\0") if f and (REPO / f).is_file())
    wheels = sum(p.stat().st_size for p in WHEELS.glob("*.whl"))
    left = BUDGET_MIB * 2**20 - tree - wheels - 512 * 1024  # keep half a MiB of slack for edits
    print(f"tree {tree / 2**20:.1f} MiB + wheels {wheels / 2**20:.1f} MiB; {left / 2**20:.1f} MiB left")
    src = REPO.parent / "shared" / "data"
    DATA.mkdir(parents=True, exist_ok=True)
    clap = src / "clap-htsat-fused"
    if clap.is_dir():
        (DATA / "clap-htsat-fused").mkdir(exist_ok=True)
        for name in ("config.json", "preprocessor_config.json"):  # the audio tower needs no tokenizer
            shutil.copy2(clap / name, DATA / "clap-htsat-fused" / name)
            left -= (clap / name).stat().st_size
    audio = src / "audio"
    if audio.is_dir():
        (DATA / "audio").mkdir(exist_ok=True)
        for p in sorted(audio.glob("*.ogg"), key=lambda p: p.stat().st_size):
            size = p.stat().st_size + p.with_suffix(".txt").stat().st_size
            if size > left:
                continue
            shutil.copy2(p, DATA / "audio" / p.name)
            shutil.copy2(p.with_suffix(".txt"), DATA / "audio" / p.with_suffix(".txt").name)  # attribution
            left -= size
    print(f"carry: scripts/wheels scripts/gpu-data ({left / 2**20:.1f} MiB of the {BUDGET_MIB:.0f} left)")
    return 0


# -- main -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, help="folder for gpu-check.json")
    ap.add_argument("--dry-run", action="store_true", help="CPU only, tiny sizes, no wheels (what CI runs)")
    ap.add_argument("--prepare", action="store_true", help="fetch wheels and data into scripts/ (needs PyPI)")
    args = ap.parse_args(argv)
    if args.prepare:
        return prepare()
    if args.out is None:
        ap.error("give the folder for the report: scripts/gpu-check OUT")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu-check.json"
    report: dict[str, Any] = {"schema": 1, "dry_run": args.dry_run, "started_utc": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(), "steps": {}}

    def save() -> None:
        report["seconds_total"] = time.perf_counter() - start
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(report, indent=1, default=str))
        tmp_path.replace(path)

    with tempfile.TemporaryDirectory(prefix="songseek-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.dry_run:
            log("installing the wheels brought along")
            report["wheels"] = install_wheels(tmp / "site")
        report["songseek"] = ensure_songseek(tmp)
        try:
            import torch
        except ImportError:
            sys.exit(f"gpu-check: {sys.executable} has no torch; run the README's test setup, then "
                     "scripts/gpu-check (it picks .venv/bin/python) or PYTHON=/path/to/python scripts/gpu-check")

        cuda = torch.cuda.is_available()
        device = "cpu" if args.dry_run or not cuda else "cuda"
        report.update({"torch": torch.__version__, "cuda_available": cuda, "device": device,
                       "gpu": torch.cuda.get_device_name(0) if cuda else None})
        if not args.dry_run and not cuda:
            report["error"] = "no CUDA device: run with --dry-run for the CPU check"
            save()
            log(report["error"])
            return 2
        ctx = Ctx(args.dry_run, tmp, device)
        for name, fn in STEPS:
            if not args.dry_run and time.perf_counter() - start > TIME_LIMIT_S - 30:
                report["steps"][name] = {"ok": False, "error": "skipped: the 8-minute budget is spent"}
                continue
            log(f"step {name}")
            t0 = time.perf_counter()
            try:
                result = fn(ctx)
                result.setdefault("ok", True)
            except Exception as exc:  # one failing step must not lose the others' figures
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = time.perf_counter() - t0
            report["steps"][name] = result
            save()
            log(f"step {name}: {'ok' if result['ok'] else 'FAILED ' + result.get('error', '')} "
                f"({result['seconds']:.1f} s)")
    report["ok"] = all(s.get("ok") for s in report["steps"].values())
    save()
    print(json.dumps(report, indent=1, default=str)[:6000])
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
