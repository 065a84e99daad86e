"""``clap``: transformers' ClapModel from a Hugging Face id or a local directory.

Audio windows are fitted to the model's 10 s input deterministically (repeat-pad or keep the start;
never a random crop), turned into log-mel spectrograms in torch on the model's device with the same
filters as the checkpoint's ``ClapFeatureExtractor``, and run through the audio tower in one forward.
For fused checkpoints (``enable_fusion=True``) every window goes through the global path only
(``is_longer`` all False), which is what LAION-CLAP does at inference for clips of at most 10 s; the
feature extractor's random choice of one "longer" clip per batch is never used.

Texts are tokenised to at most 77 tokens (LAION-CLAP's training length) and padded only to the
longest text of their chunk; with the attention mask this equals LAION's padding to 77 up to float
rounding (~1e-7) and is several times faster for short queries. The text tower runs on torch or ONNX
Runtime (fp32 or int8), chosen by ``set_text_backend`` (engine/encoders/text_backend.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError, WeightsNotFoundError
from ._hub import cache_first, hub_problem
from ._torch_util import fit_windows, log_mel, offline, seeded_cpu_rng, text_batches
from .base import EncoderInfo, l2_normalize
from .text_backend import TextTowerRunner
from .text_backend_methods import RunnerTextBackend

# laion/clap-htsat-unfused: LAION-Audio-630K HTSAT-tiny + RoBERTa, 512-d, discriminative text tower.
# Not laion/larger_clap_music: its text tower is reported to collapse every caption onto nearly one
# vector (mean pairwise cosine ~0.999; embeddings-benchmark/mteb#5069). For music, songseek's default
# encoder is ``laion`` with music_audioset_epoch_15_esc_90.14.pt (see docs/encoders.md).
DEFAULT_CHECKPOINT = "laion/clap-htsat-unfused"
# A folder of tokenizer files, for a checkpoint without them (a searcher cannot pass --checkpoint)
TOKENIZER_ENV = "SONGSEEK_CLAP_TOKENIZER"
TEXT_MAX_TOKENS = 77
TEXT_BATCH = 64


class ClapTextTower(torch.nn.Module):
    """ClapModel's text side as one module: (input_ids, attention_mask) int64 (n, L) → float32 (n, dim),
    not normalised (what is exported to ONNX)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.text_projection(hidden.pooler_output)


class ClapEncoder(RunnerTextBackend):
    """A transformers ClapModel behind the Encoder protocol (also used by the ``laion`` backend).

    ``tokenizer`` may be None; ``tokenizer_loader`` (called once, on the first ``embed_text``) may
    supply it later. When neither gives one, ``embed_text`` raises WeightsNotFoundError(``text_error``).
    """

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, info: EncoderInfo,
                 device: str, text_error: str = "",
                 tokenizer_loader: Callable[[], Any] | None = None) -> None:
        self._model = model.to(device).eval()
        self._device = device
        self._tokenizer = tokenizer
        self._tokenizer_loader = tokenizer_loader
        self._text_error = text_error or missing_tokenizer_message(info.checkpoint)
        audio_cfg = model.config.audio_config
        self._fused = bool(audio_cfg.enable_fusion)
        fe = feature_extractor
        if int(fe.feature_size) != int(audio_cfg.num_mel_bins):
            raise WeightsNotFoundError(
                f"{info.checkpoint}: feature extractor gives {fe.feature_size} mel bands but the model "
                f"expects {audio_cfg.num_mel_bins}; pass a --checkpoint DIR whose files belong together")
        self._n_samples = int(fe.nb_max_samples)
        self._n_fft = int(fe.fft_window_size)
        self._hop = int(fe.hop_length)
        # HTK filters for fused checkpoints, Slaney for unfused: what each was trained with.
        self._filters = np.asarray(fe.mel_filters if self._fused else fe.mel_filters_slaney, np.float32)
        self._info = info
        self._text_backend = "torch"  # a Library asks for "auto"; plain encoder users opt in
        self._runner: TextTowerRunner | None = None
        self._tokenizer_id = ""

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def audio_features(self, windows: np.ndarray) -> torch.Tensor:
        """windows float32 (n, samples) → model input features float32 (n, 1 or 4, frames, mels)."""
        fitted = fit_windows(windows, self._n_samples)
        wav = torch.from_numpy(fitted).to(self._device)
        mel = log_mel(wav, self._filters, self._n_fft, self._hop)[:, None]
        return mel.expand(-1, 4, -1, -1) if self._fused else mel

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 (n, samples) mono at ``info.sample_rate``. Returns float32 (n, dim), unit rows."""
        with torch.inference_mode():
            feats = self.audio_features(windows)
            is_longer = torch.zeros((feats.shape[0], 1), dtype=torch.bool, device=self._device)
            out = self._model.audio_model(input_features=feats, is_longer=is_longer if self._fused else None)
            emb = self._model.audio_projection(out.pooler_output)
        return l2_normalize(emb.float().cpu().numpy())

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_loader is not None:
            loader, self._tokenizer_loader = self._tokenizer_loader, None
            self._tokenizer = loader()
        if self._tokenizer is None:  # missing files the user supplies, as missing weights: exit code 2
            raise WeightsNotFoundError(self._text_error)
        return self._tokenizer

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """int64 (n, L) ids and attention mask, L = the longest text's tokens (at most 77)."""
        tok = self._get_tokenizer()(texts, padding=True, truncation=True, max_length=TEXT_MAX_TOKENS,
                                    return_tensors="np")
        return tok["input_ids"].astype(np.int64), tok["attention_mask"].astype(np.int64)

    def _text_runner(self) -> TextTowerRunner:
        if self._runner is None:
            self._get_tokenizer()  # fail here, with the hint, when there is none
            self._runner = TextTowerRunner(ClapTextTower(self._model), self._tokenize, self._device,
                                           self._info.checkpoint_sha256, batch=TEXT_BATCH)
            self._runner.request(self._text_backend)
        return self._runner

    def _tokenizer_identity(self) -> str:
        # The tokenizer may come from $SONGSEEK_CLAP_TOKENIZER or a folder edited apart from the weights:
        # cached text vectors (kept in a library between runs) must not outlive a change of it.
        if not self._tokenizer_id:
            self._tokenizer_id = tokenizer_identity(self._get_tokenizer())
        return self._tokenizer_id

    def embed_text_padded(self, texts: list[str], length: int = TEXT_MAX_TOKENS) -> np.ndarray:
        """The reference path: torch, every text padded to ``length`` tokens (LAION-CLAP pads to 77).
        Returns float32 (len(texts), dim), unit rows. For checks and benchmarks, not for queries."""
        tok = self._get_tokenizer()(list(texts), padding="max_length", truncation=True, max_length=length,
                                    return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model.text_model(input_ids=tok["input_ids"].to(self._device),
                                            attention_mask=tok["attention_mask"].to(self._device))
            out = self._model.text_projection(hidden.pooler_output)
        return l2_normalize(out.float().cpu().numpy())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Returns float32 (len(texts), dim), unit rows. Texts past 77 tokens are truncated."""
        batches = text_batches(texts, TEXT_BATCH)
        if not batches:
            return np.zeros((0, self._info.dim), dtype=np.float32)
        return l2_normalize(self._text_runner().embed(list(texts)))


def tokenizer_identity(tok: Any) -> str:
    """Hex SHA-256 (16 digits) of what a tokenizer maps texts to: a fast tokenizer's full definition (its
    truncation and padding state left out: they are set per call), else its class and vocabulary."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = sorted(tok.get_vocab().items())
    text = json.dumps([type(tok).__name__, getattr(tok, "truncation_side", ""), spec], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _source(checkpoint: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is it a local directory). Raises for a missing local path."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists():
        raise UsageError(f"checkpoint {checkpoint} is a file; the clap encoder takes a Hugging Face id or "
                         "a model directory (for a LAION .pt file use the laion encoder)")
    looks_local = path.is_absolute() or checkpoint.startswith((".", "~")) or checkpoint.count("/") > 1
    if looks_local:
        raise WeightsNotFoundError(f"CLAP checkpoint directory {checkpoint} does not exist: pass "
                                   "--checkpoint DIR (a saved ClapModel) or a Hugging Face id such as "
                                   f"{DEFAULT_CHECKPOINT}")
    return checkpoint, False


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _check_directory(directory: Path) -> None:
    """A local checkpoint directory must hold what ClapModel.save_pretrained writes: config.json and the
    weights. (Without config.json transformers would build its default ClapConfig and report, in many
    lines, every tensor of the file as mismatched.)"""
    missing = [name for name, ok in (("config.json", (directory / "config.json").is_file()),
                                     ("model.safetensors", any((directory / f).is_file() for f in WEIGHT_FILES)))
               if not ok]
    if missing:
        raise WeightsNotFoundError(
            f"CLAP checkpoint directory {directory} has no {' and no '.join(missing)}: pass --checkpoint DIR "
            "written by ClapModel.save_pretrained (config.json + model.safetensors), or a Hugging Face id")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' logging at error level for the duration (its multi-line load report is a warning)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _missing_message(checkpoint: str, exc: BaseException) -> str:
    problem = hub_problem()
    if offline():
        how = ("it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: pass --checkpoint DIR "
               "(a local ClapModel directory), put the model in the HF cache, or unset HF_HUB_OFFLINE "
               "when online")
    elif problem is not None:
        return (f"cannot load CLAP weights {checkpoint!r}: not in the Hugging Face cache and {problem}; pass "
                "--checkpoint DIR (a local ClapModel directory), or run once on a machine with network to "
                "fill the cache (HF_HUB_OFFLINE=1 skips the network check)")
    else:
        how = ("pass --checkpoint DIR (a local ClapModel directory with its weights) or a valid Hugging Face "
               "id, or use --random-weights for a plumbing run")
    return f"cannot load CLAP weights {checkpoint!r} ({_one_line(exc)}); {how}"


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")


def load_tokenizer(source: str, local_only: bool, bpe_class: str = "RobertaTokenizer") -> Any:
    """A tokenizer from a directory or HF id (cache first), or None when it has no vocabulary files there.

    (transformers 5 builds an empty, special-tokens-only tokenizer from a bare config.json; that
    one is refused too.) A folder holding only ``vocab.json`` + ``merges.txt`` names no tokenizer class,
    which AutoTokenizer needs: those are read with transformers' ``bpe_class`` (RoBERTa's, or GPT-2's for
    msclap)."""
    import transformers
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    where = str(path) if path.is_dir() else source

    def with_vocabulary(local_files_only: bool) -> Any:
        tok = AutoTokenizer.from_pretrained(where, local_files_only=local_files_only)
        if len(tok) <= len(set(tok.all_special_tokens)):
            # a cache holding only config.json (a first download of the weights) gives this empty
            # tokenizer without an error: raise, so that cache_first downloads the vocabulary files
            raise FileNotFoundError(f"{where}: no tokenizer vocabulary")
        return tok

    try:
        return cache_first(with_vocabulary, local_only or path.is_dir())
    except Exception:
        if not (path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file()):
            return None
    try:
        return getattr(transformers, bpe_class).from_pretrained(where, local_files_only=True)
    except Exception:
        return None


def env_tokenizer() -> Any:
    """The tokenizer in the folder $SONGSEEK_CLAP_TOKENIZER names, or None (unset, or no vocabulary there)."""
    folder = os.environ.get(TOKENIZER_ENV)
    return load_tokenizer(folder, True) if folder else None


def missing_tokenizer_message(checkpoint: str) -> str:
    """One line for text search without tokenizer files, with what a searcher can do (search takes no
    --checkpoint, and indexing again with another one is refused as another encoder)."""
    files = "tokenizer.json, or vocab.json + merges.txt"
    if Path(checkpoint).expanduser().is_dir():
        where = f"copy them into {checkpoint}"
    else:
        where = (f"put {checkpoint} in the Hugging Face cache (any songseek run with network access "
                 "downloads them; HF_HUB_OFFLINE=1 stops that)")
    return (f"text search needs the tokenizer files of {checkpoint} ({files}), not found: {where}, "
            f"or set {TOKENIZER_ENV}=DIR to a folder holding them")


def load_parts(source: str, local: bool) -> tuple[Any, Any]:
    """(feature extractor, tokenizer or None) from a directory or HF id; LAION's extractor where absent."""
    from transformers import ClapFeatureExtractor

    only_local = local or offline()
    try:
        fe = cache_first(lambda lo: ClapFeatureExtractor.from_pretrained(source, local_files_only=lo), only_local)
    except Exception:  # no preprocessor_config: LAION-CLAP's own settings
        fe = laion_feature_extractor()
    return fe, load_tokenizer(source, only_local)


def laion_feature_extractor() -> Any:
    """ClapFeatureExtractor with LAION-CLAP's audio settings (48 kHz, 10 s, 64 mels 50-14000 Hz, hop 480)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                                fft_window_size=1024, frequency_min=50, frequency_max=14000,
                                padding="repeatpad", truncation="rand_trunc")


def make_info(name: str, checkpoint: str, model: Any, fe: Any, random_weights: bool,
              sha256: str = "") -> EncoderInfo:
    return EncoderInfo(name=name, checkpoint=checkpoint, dim=int(model.config.projection_dim),
                       sample_rate=int(fe.sampling_rate), checkpoint_sha256=sha256,
                       random_weights=random_weights,
                       native_window_s=float(fe.nb_max_samples) / float(fe.sampling_rate),
                       text_max_tokens=TEXT_MAX_TOKENS)


def random_model(config: Any) -> Any:
    """The real ClapModel architecture with random weights, seeded (CPU generator, seed 0; restored after)."""
    from transformers import ClapModel

    with seeded_cpu_rng(0):
        return ClapModel(config)


def check_complete(checkpoint: str, model: Any, missing: Any) -> None:
    """Refuse a checkpoint that lacks trained tensors: transformers fills them with random values and
    only logs it, so e.g. a text-only save, or a fused config over unfused weights, would index audio with
    a random tower while the library says trained weights. Buffers computed at construction (position
    ids, relative position indices, batch counts) and the training-only logit scales may be absent."""
    params = dict(model.named_parameters())
    learned = sorted(k for k in missing if (k in params and not k.startswith("logit_scale"))
                     or k.endswith(("running_mean", "running_var")))
    if learned:
        raise WeightsNotFoundError(
            f"CLAP checkpoint {checkpoint} lacks {len(learned)} trained tensors of its config's architecture "
            f"(e.g. {learned[0]}): is it a complete ClapModel saved with save_pretrained, with the config.json "
            "it was trained with?")


def load(checkpoint: str | None, device: str, random_weights: bool) -> ClapEncoder:
    """Build the ``clap`` encoder from a Hugging Face id (default ``laion/clap-htsat-unfused``) or a
    local ClapModel directory. Raises WeightsNotFoundError (one line) when the weights cannot be found."""
    from transformers import ClapConfig, ClapModel

    ckpt = checkpoint or DEFAULT_CHECKPOINT
    source, local = _source(ckpt)
    only_local = local or offline()
    if random_weights:
        try:
            config = cache_first(lambda lo: ClapConfig.from_pretrained(source, local_files_only=lo), only_local)
        except Exception:
            config = ClapConfig()
        model = random_model(config)
    else:
        if local:
            _check_directory(Path(source))

        def with_report(local_files_only: bool) -> tuple[Any, dict[str, Any]]:
            loaded: Any = ClapModel.from_pretrained(source, local_files_only=local_files_only,
                                                    output_loading_info=True)
            # float32 whatever the saved dtype (an fp16 save would load as fp16 and fail in the first batch
            # norm against songseek's float32 mel input)
            return loaded[0].float(), loaded[1]

        try:
            with _quiet_transformers():  # its load report is many lines; check_complete says it in one
                model, loading = cache_first(with_report, only_local)
        except Exception as exc:
            if local:  # the files are there (checked above): no hub or cache advice
                raise WeightsNotFoundError(
                    f"cannot load CLAP weights from {source} ({_one_line(exc)}): is its weights file complete "
                    "and the one saved with its config.json? Save the model again with save_pretrained") from exc
            raise WeightsNotFoundError(_missing_message(ckpt, exc)) from exc
        check_complete(ckpt, model, loading.get("missing_keys") or ())
    fe, tok = load_parts(source, local)
    info = make_info("clap", ckpt, model, fe, random_weights)
    return ClapEncoder(model, fe, tok, info, device, text_error=missing_tokenizer_message(ckpt),
                       tokenizer_loader=None if tok is not None else env_tokenizer)
