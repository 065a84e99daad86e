"""ONNX Runtime text path: a text tower exported once per checkpoint, in fp32 and dynamically quantised int8.

Why: a query's text is a dozen tokens, so a RoBERTa-base forward is bound by reading 125M weights, not by
arithmetic. ONNX Runtime's fused CPU kernels beat eager torch at this, and int8 weights read a quarter of
the bytes (docs/performance.md, "Text queries").

Layout: ``cache_root()/<fingerprint>/`` holds ``text-fp32.onnx``, ``text-int8-matmul.onnx``, ``choice.json``
(the checks and timings that chose the default backend on this machine) and, once a user has run
``bench text-ranking --save``, ``int8-ranking.json`` (whether int8 kept a real library's rankings).
``fingerprint`` hashes the text tower's weights (``weights_fingerprint``) and what else shapes the export
(``export_context``: opset, torch/transformers/onnx/onnxruntime versions), so a cache entry can never serve
another checkpoint, nor outlive an upgrade. Files are
written under temporary names and renamed, so a crash leaves no half model that looks whole.

``onnxruntime`` and ``onnx`` are the ``onnx`` extra; without them ``missing_reason()`` says so in one line
and the encoders keep the torch path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

TEXT_BACKENDS = ("torch", "onnx", "onnx-int8")
AUTO = "auto"
CACHE_ENV = "SONGSEEK_CACHE_DIR"
# "matmul": only MatMul weights are int8 (the int8 file from before that change, which also quantised the
# embedding tables, was text-int8.onnx; the new export deletes it)
FP32_FILE, INT8_FILE, CHOICE_FILE = "text-fp32.onnx", "text-int8-matmul.onnx", "choice.json"
_OLD_INT8_FILE = "text-int8.onnx"
OPSET = 17
# The checks a backend must pass to be chosen by default (the thresholds).
MIN_COSINE = {"torch": 1.0, "onnx": 0.9999, "onnx-int8": 0.99}
# What ``auto`` may pick besides torch. int8 is left to those who ask for it: a cosine check cannot vouch for
# rankings, and on the one trained model here (demo) int8 keeps the top-10 identical for 0.89 of section
# captions and 0.62 of other texts, under the 0.95 (docs/encoders.md, "Does int8 change rankings?").
AUTO_CANDIDATES = ("onnx",)
CHOICE_VERSION = 1
# ... unless int8 passed the ranking check on a library searched with these weights (``bench text-ranking
# --save``): top-k identical to torch's for this share of at least this many queries, trained weights only.
RANKING_FILE = "int8-ranking.json"
MIN_IDENTICAL = 0.95
MIN_RANKING_QUERIES = 50

# Probe texts for the run-time checks and timings: music captions of 1 to ~60 words.
PROBE_TEXTS = (
    "piano", "jazz", "upbeat drums", "sad cello melody",
    "a calm solo piano piece with soft reverb and warm strings",
    "female vocalist singing over acoustic guitar in a small room",
    "aggressive metal riff with double bass drums and distorted guitars",
    "lo-fi hip hop beat with vinyl crackle and a mellow electric piano",
    "orchestral film score with swelling strings, brass fanfares and timpani rolls building to a climax",
    "This is a live recording of a reggae band. The bass plays a deep groove while the guitar plays offbeat "
    "skanks. A male vocalist sings in a relaxed voice and a choir answers him. The audio quality is poor and "
    "there is crowd noise in the background. This song may be played at a summer festival by the beach.",
)


def validate_backend(name: str) -> str:
    """``name`` if it is ``auto`` or one of TEXT_BACKENDS; UsageError naming the choices otherwise."""
    if name != AUTO and name not in TEXT_BACKENDS:
        raise UsageError(f"unknown text backend {name!r}: use auto, {', '.join(TEXT_BACKENDS)}")
    return name


def missing_reason() -> str:
    """'' when onnxruntime and onnx import; else one line saying what to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return (f"onnxruntime/onnx not installed ({exc.name}): pip install 'songseek[onnx]' for the fast "
                "text path; text queries use torch")
    return ""


def cache_root() -> Path:
    """$SONGSEEK_CACHE_DIR/onnx, else ~/.cache/songseek/onnx."""
    base = os.environ.get(CACHE_ENV) or str(Path("~/.cache/songseek").expanduser())
    return Path(base).expanduser() / "onnx"


def export_context(tower: torch.nn.Module) -> str:
    """What besides the weights shapes an exported tower and its vectors: the tower's class, the opset and
    the versions of torch (exporter), transformers (model code), onnx and onnxruntime (quantiser). Part of the
    fingerprint, so an upgrade exports afresh instead of reusing a file the new code would not write."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    versions = ",".join(f"{d}={version(d)}" for d in ("torch", "transformers", "onnx", "onnxruntime"))
    return f"{type(tower).__module__}.{type(tower).__qualname__}|opset={OPSET}|{versions}"


def weights_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """Hex SHA-256 over every tensor's name, shape, dtype and a strided sample of at most 4,096 of its
    values (plus ``extra``, e.g. the checkpoint file's hash). Reading 500 MB of RoBERTa weights would cost
    about a second; two checkpoints that differ nowhere in these samples do not exist in practice."""
    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class BackendChoice:
    """Why a backend is the default on this machine: each backend's worst probe cosine with torch and its
    median seconds per 10-word text (inf where it could not run), the threads they were timed on."""

    chosen: str
    min_cosine: dict[str, float]
    seconds: dict[str, float]
    threads: int
    version: int = CHOICE_VERSION

    def passes(self, backend: str) -> bool:
        return self.min_cosine.get(backend, -1.0) >= MIN_COSINE[backend]


@dataclass(frozen=True)
class TextBackendState:
    """What a text tower runs on now: ``backend`` (torch, onnx, onnx-int8), ``requested`` (auto or a
    name), ``note`` (why it is not what was asked for; '' when it is), ``choice`` (auto's record)."""

    backend: str
    requested: str
    note: str = ""
    choice: BackendChoice | None = None


def _atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _atomic_write_bytes(path, write)


# A temporary file older than this is left by a process killed mid-write (an export takes about a minute).
STALE_TEMP_S = 3600.0


def remove_stale_temps(folder: Path, now: float | None = None) -> list[Path]:
    """Delete the ``.tmp-*`` files in ``folder`` older than STALE_TEMP_S (a kill -9 mid-export leaves one of
    ~500 MB for the real model, never removed otherwise); returns those deleted. Younger ones may be another
    process's export in progress and stay."""
    cutoff = (time.time() if now is None else now) - STALE_TEMP_S
    gone = []
    for p in folder.glob(".tmp-*") if folder.is_dir() else ():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                gone.append(p)
        except FileNotFoundError:  # another process removed or renamed it meanwhile
            continue
    return gone


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name in ``path``'s folder, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class TowerInputs:
    """The names of a text tower's inputs, in ``tower(*inputs)`` order, and their dynamic axes
    (``{input name: {axis: axis name}}``); the output is always ``embedding``, (batch, dim)."""

    names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


# RoBERTa towers (clap, laion): int64 (n, L) token ids and attention mask.
ID_MASK_INPUTS = TowerInputs(("input_ids", "attention_mask"), {"input_ids": {0: "batch", 1: "tokens"},
                                                               "attention_mask": {0: "batch", 1: "tokens"}})


def export_text_tower(tower: torch.nn.Module, example: tuple[np.ndarray, ...], folder: Path,
                      inputs: TowerInputs = ID_MASK_INPUTS) -> None:
    """Export ``tower(*inputs) -> (n, dim)`` to ``folder/text-fp32.onnx`` (``inputs``' axes dynamic) and
    its dynamically quantised int8 copy (MatMul weights only) to ``folder/text-int8-matmul.onnx``, each only
    if absent. ``example``: one tokenised batch, padded (exercises the mask in the trace), in ``inputs.names``
    order.
    Raises whatever torch.onnx or the quantiser raise; callers turn that into a fallback to torch."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = folder / FP32_FILE, folder / INT8_FILE
    remove_stale_temps(folder)
    if not fp32.exists():
        args = tuple(torch.from_numpy(np.asarray(a)) for a in example)

        def write_fp32(tmp: Path) -> None:
            # dynamo=False: the TorchScript exporter needs no onnxscript and handles HF's mask code. Not under
            # no_grad: there torch's TransformerEncoderLayer takes a fused fast path that has no ONNX form.
            # The tracer's warnings (constants in the trace) are about the export, not the user's data: a
            # first `songseek index` printed a screen of them.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(
                    tower, args, str(tmp), dynamo=False, opset_version=OPSET, input_names=list(inputs.names),
                    output_names=["embedding"], dynamic_axes={**inputs.dynamic_axes, "embedding": {0: "batch"}})

        _atomic_write_bytes(fp32, write_fp32)
    if not int8.exists():
        # MatMul only: ONNX Runtime's default also quantises Gather, i.e. the token and n-gram embedding
        # tables, with one range per table; on the trained demo model that was most of int8's error
        # (worst cosine vs torch 0.9958 -> 0.9996, same top-10 set 0.77 -> 0.95 of 300 texts) at no speed
        # gain (clap tower, 14 tokens: 17.7 vs 17.1 ms, interleaved; docs/encoders.md)
        with _root_log_level(logging.ERROR):  # the quantiser logs "consider pre-processing" on the root logger
            _atomic_write_bytes(int8, lambda tmp: quantize_dynamic(
                str(fp32), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]))
        (folder / _OLD_INT8_FILE).unlink(missing_ok=True)  # ~125 MB no reader opens any more


@contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(level, before))
    try:
        yield
    finally:
        root.setLevel(before)


class OnnxTextSession:
    """One exported text tower in ONNX Runtime on the CPU, ``threads`` intra-op threads (thread-safe)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # the demo tower's EmbeddingBag loop warns on every load; errors still raise
        # Idle worker threads sleep instead of spinning: spinning ones keep a core busy after each run, which on
        # a shared 2-core machine slowed the encode 1.6-1.8x and the FAISS search right after it 1.9-2.4x
        # (docs/performance.md, "Text queries").
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        # int8 quantises activations with one range per run: a text run with others would get another vector
        # than alone (and a shared text cache would keep whichever came first), so it runs texts one by one
        self.one_text_per_run = path.name == INT8_FILE
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._names = [i.name for i in self._session.get_inputs()]

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """The tower's inputs, in export order (as its tokenizer gives them) → float32 (n, dim), not
        normalised."""
        out = self._session.run(None, dict(zip(self._names, inputs)))
        return np.asarray(out[0], dtype=np.float32)

    def run_texts(self, tokenize: Callable[[list[str]], tuple[np.ndarray, ...]]
                  ) -> Callable[[list[str]], np.ndarray]:
        """texts → float32 (n, dim) through ``tokenize`` and this session."""
        if self.one_text_per_run:
            return lambda texts: np.concatenate([self.run(*tokenize([t])) for t in texts])
        return lambda texts: self.run(*tokenize(texts))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine of two float (n, dim) arrays."""
    return float((_unit(np.asarray(a, np.float64)) * _unit(np.asarray(b, np.float64))).sum(axis=1).min())


def choose_backend(runners: dict[str, Callable[[list[str]], np.ndarray]], threads: int,
                   probes: tuple[str, ...] = PROBE_TEXTS, repeats: int = 3) -> BackendChoice:
    """Check every runner against ``runners["torch"]`` on ``probes`` (one text per call, as queries
    come) and time it on the 10-word ones; the fastest that passes MIN_COSINE is chosen."""
    reference = np.concatenate([runners["torch"]([t]) for t in probes])
    timed = [t for t in probes if 5 <= len(t.split()) <= 15]
    cosines: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name, run in runners.items():
        vecs = np.concatenate([run([t]) for t in probes])  # also the warm-up
        cosines[name] = 1.0 if name == "torch" else min_cosine(vecs, reference)
        times = []
        for _ in range(repeats):
            for t in timed:
                t0 = time.perf_counter()
                run([t])
                times.append(time.perf_counter() - t0)
        seconds[name] = float(np.median(times))
    passing = [n for n in runners if cosines[n] >= MIN_COSINE[n]]
    chosen = min(passing, key=lambda n: seconds[n])
    return BackendChoice(chosen, cosines, seconds, threads)


def read_choice(folder: Path, threads: int) -> BackendChoice | None:
    """The recorded choice for these threads, or None (absent, damaged, older format, other threads)."""
    try:
        raw = json.loads((folder / CHOICE_FILE).read_text(encoding="utf-8"))
        choice = BackendChoice(**raw[str(threads)])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if choice.version != CHOICE_VERSION or choice.chosen not in TEXT_BACKENDS:
        return None
    return choice


def write_choice(folder: Path, choice: BackendChoice) -> None:
    """Record ``choice`` under its thread count, keeping the other thread counts' records."""
    path = folder / CHOICE_FILE
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raw = {}
    except (OSError, ValueError):
        raw = {}
    raw[str(choice.threads)] = asdict(choice)
    _atomic_write_json(path, raw)


@dataclass(frozen=True)
class RankingCheck:
    """What ``bench text-ranking --save`` measured for int8 on one library: the share of queries whose top-k
    was identical to torch's (same tracks, same order), the same set, and int8's worst query cosine."""

    library: str
    queries: int
    k: int
    identical: float
    same_set: float
    min_cosine: float
    random_weights: bool

    def failures(self) -> list[str]:
        """Why int8 may not be a default after this check (empty: it may)."""
        out = []
        if self.random_weights:
            out.append("random weights cannot show ranking damage")
        if self.queries < MIN_RANKING_QUERIES:
            out.append(f"{self.queries} queries < {MIN_RANKING_QUERIES}")
        if self.identical < MIN_IDENTICAL:
            out.append(f"top-{self.k} identical for {self.identical:.3f} of queries < {MIN_IDENTICAL}")
        if self.min_cosine < MIN_COSINE["onnx-int8"]:
            out.append(f"worst cosine {self.min_cosine:.5f} < {MIN_COSINE['onnx-int8']}")
        return out


def read_ranking_check(folder: Path) -> RankingCheck | None:
    """The saved int8 ranking check of this checkpoint, or None (absent or damaged)."""
    try:
        return RankingCheck(**json.loads((folder / RANKING_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_ranking_check(folder: Path, check: RankingCheck) -> None:
    """Save ``check`` and forget the recorded backend choices, so that ``auto`` chooses again among the
    candidates the check allows (a failing check replaces an earlier passing one)."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(folder / RANKING_FILE, asdict(check))
    (folder / CHOICE_FILE).unlink(missing_ok=True)


def auto_candidates(folder: Path) -> tuple[str, ...]:
    """The backends ``auto`` times against torch for this checkpoint: fp32 ONNX, and int8 once a saved
    ranking check passed."""
    check = read_ranking_check(folder)
    return AUTO_CANDIDATES + (("onnx-int8",) if check is not None and not check.failures() else ())


def remove_models(folder: Path) -> None:
    """Delete one checkpoint's exported models, not its recorded choice or ranking check, so that the next
    export writes them afresh."""
    for name in (FP32_FILE, INT8_FILE):
        (folder / name).unlink(missing_ok=True)
