"""Opinion-score head (MusicEval, seed 000): a 3-layer MLP on stored CLAP vectors predicting 1-5 scores.

Two heads, as the MusicEval / AudioMOS 2025 track-1 baseline: *musical impression* from the audio vector
(dim → 256 → 64 → 1) and *textual alignment* from the audio vector concatenated with the prompt's text
vector (2·dim → 256 → 64 → 1); ReLU between layers (the published baseline code stacks the Linear layers
without an activation, which collapses to one linear map; the paper says MLP). Loss: L1 on each head,
averaged; optimiser SGD (lr 5e-4, momentum 0.9, batch 64) as the paper, with early stopping on a held-out
part of the training set (patience 20, the baseline's). The audio vector of a track is the normalised
mean of its stored window vectors (engine/outliers.pooled_track_vectors): nothing is re-embedded.

A head is saved as one safetensors file whose metadata carries the encoder that made the vectors; loading
it for vectors from another encoder is refused. torch is imported inside the functions only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.analysis.pooling import library_track_vectors, pooled_track_vectors
from songseek.engine.analysis.track_match import (
    TrackMatcher,
    no_match_error,
    pick_column,
    read_csv_records,
    row_name,
)
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, LibraryError, UsageError
from songseek.engine.query.search import Library
from songseek.engine.storage.writer import LibraryWriter

FORMAT = "songseek-mos-head"
FORMAT_VERSION = "1"
SCORE_RANGE = (1.0, 5.0)
DEFAULT_HEAD_NAME = "mos-head.safetensors"


@dataclass(frozen=True)
class MosTrainConfig:
    """Training settings; defaults follow MusicEval's baseline (SGD 5e-4, momentum 0.9, batch 64, L1)."""

    hidden: tuple[int, int] = (256, 64)
    optimizer: str = "sgd"            # sgd (paper) or adam
    lr: float = 5e-4
    momentum: float = 0.9
    batch_size: int = 64
    max_epochs: int = 1000
    patience: int = 20
    valid_fraction: float = 0.1       # of the training rows, for early stopping
    seed: int = 0

    def validated(self) -> MosTrainConfig:
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # nan passes `<= 0` and trains a head of NaNs
            raise UsageError(f"lr must be positive and finite (got {self.lr!r})")
        for name, value in (("batch_size", self.batch_size), ("max_epochs", self.max_epochs),
                            ("patience", self.patience)):
            if value < 1:
                raise UsageError(f"{name} must be positive (got {value})")
        if self.seed < 0:  # numpy's generators take no negative seed
            raise UsageError(f"seed must be 0 or more (got {self.seed})")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise UsageError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        return self


@dataclass(frozen=True)
class MosTrainReport:
    """What training did: rows used, epochs run, best epoch and its losses (mean L1 over the heads)."""

    n_train: int
    n_valid: int
    heads: tuple[str, ...]
    epochs: int
    best_epoch: int
    train_l1: float
    valid_l1: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MosPrediction:
    """float32 (N,) predicted scores clipped to 1-5; ``alignment`` is None when no text vectors were given
    or the head has no alignment part."""

    impression: np.ndarray
    alignment: np.ndarray | None


def _mlp(torch: Any, dim_in: int, hidden: tuple[int, int]) -> Any:
    nn = torch.nn
    return nn.Sequential(nn.Linear(dim_in, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                         nn.Linear(hidden[1], 1))


class MosHead:
    """The trained heads and the encoder their inputs came from. Build with ``train_head`` or ``load``."""

    def __init__(self, encoder: EncoderInfo, hidden: tuple[int, int], with_alignment: bool,
                 state: dict[str, Any] | None = None, report: MosTrainReport | None = None) -> None:
        import torch

        self.encoder = encoder
        self.hidden = hidden
        self.with_alignment = with_alignment
        self.report = report
        self.impression = _mlp(torch, encoder.dim, hidden)
        self.alignment = _mlp(torch, 2 * encoder.dim, hidden) if with_alignment else None
        if state is not None:
            self._load_state(state)

    @property
    def heads(self) -> tuple[str, ...]:
        return ("impression", "alignment") if self.with_alignment else ("impression",)

    def state(self) -> dict[str, Any]:
        out = {f"impression.{k}": v.detach().cpu().contiguous() for k, v in self.impression.state_dict().items()}
        if self.alignment is not None:
            out.update({f"alignment.{k}": v.detach().cpu().contiguous()
                        for k, v in self.alignment.state_dict().items()})
        return out

    def _load_state(self, state: dict[str, Any]) -> None:
        for name in self.heads:
            module = getattr(self, name)
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            try:
                module.load_state_dict(part)
            except RuntimeError as exc:
                raise LibraryError(f"MOS head: the {name} weights do not fit ({str(exc).splitlines()[0]})") from exc

    def check_encoder(self, encoder: EncoderInfo, where: str) -> None:
        """Refuse vectors from another encoder than the one the head was trained on."""
        ours = self.encoder
        differs = [f"{label} {a!r} (head) vs {b!r} ({where})"
                   for label, a, b in (("encoder", ours.name, encoder.name),
                                       ("checkpoint", ours.checkpoint, encoder.checkpoint),
                                       ("checkpoint sha256", ours.checkpoint_sha256, encoder.checkpoint_sha256),
                                       ("dim", ours.dim, encoder.dim)) if a != b]
        if differs:
            raise IncompatibleLibraryError(
                f"this MOS head was trained on vectors of another encoder: {'; '.join(differs)}; "
                "train a head on this library with `songseek mos train`")

    def predict(self, audio: np.ndarray, text: np.ndarray | None = None) -> MosPrediction:
        """audio float32 (N, dim) unit track vectors; text float32 (N, dim) prompt vectors or None."""
        import torch

        a = _check_matrix(audio, self.encoder.dim, "audio vectors")
        with torch.no_grad():
            xa = torch.from_numpy(a)
            imp = self.impression(xa).squeeze(1).numpy()
            ali = None
            if text is not None and self.alignment is not None:
                t = _check_matrix(text, self.encoder.dim, "text vectors")
                if len(t) != len(a):
                    raise UsageError(f"{len(a)} audio vectors but {len(t)} text vectors")
                ali = self.alignment(torch.cat([xa, torch.from_numpy(t)], dim=1)).squeeze(1).numpy()
        lo, hi = SCORE_RANGE
        return MosPrediction(np.clip(imp, lo, hi).astype(np.float32),
                             None if ali is None else np.clip(ali, lo, hi).astype(np.float32))

    def save(self, path: str | Path) -> Path:
        """Write the head atomically as safetensors; the metadata names the encoder and the training run."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "encoder": json.dumps(asdict(self.encoder)),
                "hidden": json.dumps(list(self.hidden)), "heads": ",".join(self.heads),
                "report": json.dumps(self.report.to_json() if self.report else None)}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file(self.state(), str(tmp), metadata=meta)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LibraryError(f"could not write the MOS head to {path}: {exc}") from exc
        return path


def load_head(path: str | Path, encoder: EncoderInfo | None = None) -> MosHead:
    """Read a head saved by ``MosHead.save``; with ``encoder``, refuse it unless it was trained on that one."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no MOS head at {path}: train one with `songseek mos train --library LIB --ratings CSV`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
        if meta.get("format") != FORMAT:
            raise LibraryError(f"{path} is not a songseek MOS head (format {meta.get('format')!r})")
        info = EncoderInfo(**json.loads(meta["encoder"]))
        hidden_list = json.loads(meta["hidden"])
        hidden = (int(hidden_list[0]), int(hidden_list[1]))
        heads = meta.get("heads", "impression").split(",")
        raw_report = json.loads(meta.get("report") or "null")
        report = MosTrainReport(**{**raw_report, "heads": tuple(raw_report["heads"])}) if raw_report else None
    except (OSError, KeyError, ValueError, TypeError, IndexError, SafetensorError) as exc:
        # SafetensorError: a truncated or foreign file (its header cannot be read)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LibraryError(f"{path}: unreadable MOS head ({reason}); train it again with `songseek mos train`"
                           ) from exc
    head = MosHead(info, hidden, "alignment" in heads, state, report)
    if encoder is not None:
        head.check_encoder(encoder, str(path))
    return head


def _check_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != dim:
        raise UsageError(f"{what} must be (n, {dim}), got {a.shape}")
    if not np.isfinite(a).all():
        raise UsageError(f"{what} contain NaN or inf")
    return a


def _check_scores(y: np.ndarray, n: int, what: str) -> np.ndarray:
    s = np.asarray(y, dtype=np.float32).reshape(-1)
    if len(s) != n:
        raise UsageError(f"{n} vectors but {len(s)} {what} scores")
    if not np.isfinite(s).all():
        raise UsageError(f"{what} scores contain NaN or inf")
    return s


# Called after each training epoch with (epoch, best L1 so far): a caller's progress display.
EpochCallback = Callable[[int, float], None]


def train_head(encoder: EncoderInfo, audio: np.ndarray, impression: np.ndarray, text: np.ndarray | None = None,
               alignment: np.ndarray | None = None, config: MosTrainConfig | None = None,
               on_epoch: EpochCallback | None = None) -> MosHead:
    """Fit the heads on float32 (N, dim) audio vectors and (N,) impression scores, plus, when given, (N, dim)
    prompt text vectors and (N,) alignment scores. Deterministic for a given seed on one machine.
    ``on_epoch(epoch, best_l1)`` runs after every epoch (training may stop early, before max_epochs)."""
    import torch

    cfg = (config or MosTrainConfig()).validated()
    a = _check_matrix(audio, encoder.dim, "audio vectors")
    n = len(a)
    if n < 2:
        raise UsageError(f"training needs at least 2 rated tracks, got {n}")
    y1 = _check_scores(impression, n, "impression")
    with_text = text is not None and alignment is not None
    t = _check_matrix(text, encoder.dim, "text vectors") if with_text and text is not None else None
    y2 = _check_scores(alignment, n, "alignment") if with_text and alignment is not None else None
    if t is not None and len(t) != n:
        raise UsageError(f"{n} audio vectors but {len(t)} text vectors")
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    n_valid = int(round(n * cfg.valid_fraction)) if n >= 10 else 0
    valid, train = perm[:n_valid], perm[n_valid:]
    torch.manual_seed(cfg.seed)
    head = MosHead(encoder, cfg.hidden, with_text)
    params = [p for m in (head.impression, head.alignment) if m is not None for p in m.parameters()]
    opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
           else torch.optim.Adam(params, lr=cfg.lr))
    xa = torch.from_numpy(a)
    xt = torch.from_numpy(t) if t is not None else None
    t1 = torch.from_numpy(y1)
    t2 = torch.from_numpy(y2) if y2 is not None else None

    def loss_on(idx: np.ndarray) -> Any:
        ix = torch.from_numpy(idx)
        loss = torch.nn.functional.l1_loss(head.impression(xa[ix]).squeeze(1), t1[ix])
        if head.alignment is not None and xt is not None and t2 is not None:
            out2 = head.alignment(torch.cat([xa[ix], xt[ix]], dim=1)).squeeze(1)
            loss = (loss + torch.nn.functional.l1_loss(out2, t2[ix])) / 2
        return loss

    best: tuple[float, int, float, dict[str, Any]] | None = None
    wait, epoch = cfg.patience, 0
    for epoch in range(1, cfg.max_epochs + 1):
        order = train[rng.permutation(len(train))]
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i:i + cfg.batch_size]
            opt.zero_grad()
            loss = loss_on(batch)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        train_l1 = total / len(order)
        with torch.no_grad():
            valid_l1 = float(loss_on(valid)) if len(valid) else train_l1
        if best is None or valid_l1 < best[0]:
            best = (valid_l1, epoch, train_l1, {k: v.clone() for k, v in head.state().items()})
            wait = cfg.patience
        else:
            wait -= 1
        if on_epoch is not None:
            on_epoch(epoch, best[0])
        if wait == 0:
            break
    assert best is not None
    head._load_state(best[3])
    head.report = MosTrainReport(n_train=len(train), n_valid=len(valid), heads=head.heads, epochs=epoch,
                                 best_epoch=best[1], train_l1=best[2], valid_l1=best[0])
    return head


IMPRESSION_COLUMNS = ("impression", "musical_impression", "mi", "overall", "mos_impression")
ALIGNMENT_COLUMNS = ("alignment", "textual_alignment", "ta", "textual", "mos_alignment")
PROMPT_COLUMNS = ("prompt", "text", "caption", "description")
MOS_TABLE = "mos"


@dataclass(frozen=True)
class Ratings:
    """Rated tracks of a library: ``track_ids`` (N,), ``impression`` float32 (N,), optionally
    ``alignment`` float32 (N,) with the ``prompts`` it was rated against, and ``systems`` (N,) (the
    generator of each clip, for system-level metrics). ``unmatched``: CSV rows no track matched.
    ``averaged``: CSV rows folded into another row of the same track (and prompt) by averaging;
    ``rows``: the CSV's rows, matched or not."""

    track_ids: tuple[str, ...]
    impression: np.ndarray
    alignment: np.ndarray | None = None
    prompts: tuple[str, ...] | None = None
    systems: tuple[str, ...] | None = None
    unmatched: tuple[str, ...] = ()
    averaged: int = 0
    rows: int = 0

    def subset(self, idx: np.ndarray) -> Ratings:
        def pick(x: tuple[str, ...] | None) -> tuple[str, ...] | None:
            return None if x is None else tuple(x[i] for i in idx)

        return Ratings(tuple(self.track_ids[i] for i in idx), self.impression[idx],
                       None if self.alignment is None else self.alignment[idx], pick(self.prompts),
                       pick(self.systems), self.unmatched)


def _keyed_csv(path: str | Path, names: tuple[str, ...],
               what: str) -> tuple[Path, list[tuple[int, dict[str, str]]], str]:
    """A CSV keyed by ``track_id`` or ``path``: its path, (line, row) records and the column of ``names``
    it has (the first found); refused in one line without one."""
    path = Path(path).expanduser()
    records = read_csv_records(path, ("track_id", "path"))
    col = pick_column(records[0][1], names)
    if col is None:
        raise UsageError(f"{path}: needs {what} column ({', '.join(names)})")
    return path, records, col


def read_ratings(path: str | Path, tracks: pa.Table, system_column: str = "system") -> Ratings:
    """Read a ratings CSV against a library's tracks table (pyarrow): one row per rated track with
    ``track_id`` or ``path``, an impression column (impression / musical_impression / mi / overall), and
    optionally an alignment column (alignment / textual_alignment / ta) with the ``prompt`` (or text /
    caption) it was rated against, and a system column. Scores must lie in 1-5."""

    path, records, imp_col = _keyed_csv(path, IMPRESSION_COLUMNS, "an impression")
    rows = [row for _, row in records]
    ali_col = pick_column(rows[0], ALIGNMENT_COLUMNS)
    prompt_col = pick_column(rows[0], PROMPT_COLUMNS)
    if ali_col is not None and prompt_col is None:
        raise UsageError(f"{path}: column {ali_col!r} needs the prompt each clip was rated against "
                         f"(a column named one of {', '.join(PROMPT_COLUMNS)})")
    wanted = system_column.strip().lower()
    sys_col = wanted if wanted in rows[0] else None
    if sys_col is None and wanted != "system":  # the default column is optional, a named one is not
        raise UsageError(f"{path}: no column {wanted!r} for the systems (--system-column); "
                         f"found {', '.join(rows[0])}")
    matcher = TrackMatcher(tracks, path.parent)
    ids, imp, ali, prompts, systems, lines, unmatched = [], [], [], [], [], [], []
    for i, row in records:
        tid = matcher.match(row)
        if tid is None:
            unmatched.append(row_name(row, i))
            continue
        ids.append(tid)
        lines.append(i)
        imp.append(_score(row[imp_col], path, i, imp_col))
        if ali_col is not None and prompt_col is not None:
            ali.append(_score(row[ali_col], path, i, ali_col))
            if not row[prompt_col]:
                raise UsageError(f"{path} line {i}: empty {prompt_col}")
            prompts.append(row[prompt_col])
        if sys_col is not None:
            if not row[sys_col]:
                raise UsageError(f"{path} line {i}: empty {sys_col} (each clip's system, for system-level metrics)")
            systems.append(row[sys_col])
    if not ids:
        raise no_match_error(path, unmatched)
    # Several rows for one track (and prompt), e.g. one per rater, are one example: averaged, so that a
    # train/validation split never puts the same clip on both sides.
    keys = [(t, prompts[i] if ali_col else "") for i, t in enumerate(ids)]
    first = list(dict.fromkeys(keys))
    slot = {k: j for j, k in enumerate(first)}
    idx = np.asarray([slot[k] for k in keys])
    counts = np.bincount(idx, minlength=len(first))

    def mean(values: list[float]) -> np.ndarray:
        return (np.bincount(idx, weights=np.asarray(values, np.float64), minlength=len(first)) / counts
                ).astype(np.float32)

    track_row: dict[str, int] = {}  # each track's first row: all of a track's rows name its system
    if sys_col is not None:
        for r, t in enumerate(ids):
            j = track_row.setdefault(t, r)
            if systems[r] != systems[j]:
                raise UsageError(f"{path}: rows of track {t} name systems {systems[j]!r} (line {lines[j]}) and "
                                 f"{systems[r]!r} (line {lines[r]}); a clip comes from one system")
    return Ratings(tuple(k[0] for k in first), mean(imp), mean(ali) if ali_col else None,
                   tuple(k[1] for k in first) if ali_col else None,
                   tuple(systems[track_row[t]] for t, _ in first) if sys_col else None, tuple(unmatched),
                   len(keys) - len(first), len(rows))


@dataclass(frozen=True)
class Prompts:
    """Prompts for the alignment score read from a CSV: ``by_track`` track id → prompt (rows with an empty
    prompt give their track none); ``unmatched``: rows no track matched; ``rows``: the CSV's rows."""

    by_track: dict[str, str]
    unmatched: tuple[str, ...]
    rows: int


def read_prompts(path: str | Path, tracks: pa.Table) -> Prompts:
    """Read a prompts CSV (``track_id`` or ``path``, and a prompt column) against a library's tracks table.
    A file none of whose rows matches a track is refused: it would give no track an alignment score."""
    path, records, col = _keyed_csv(path, PROMPT_COLUMNS, "a prompt")
    matcher = TrackMatcher(tracks, path.parent)
    by_track: dict[str, str] = {}
    unmatched: list[str] = []
    for i, row in records:
        tid = matcher.match(row)
        if tid is None:
            unmatched.append(row_name(row, i))
        elif row[col]:
            by_track[tid] = row[col]
    if len(unmatched) == len(records):
        raise no_match_error(path, unmatched)
    return Prompts(by_track, tuple(unmatched), len(records))


def _score(cell: str, path: Path, line: int, col: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise UsageError(f"{path} line {line}: {col} {cell!r} is not a number") from None
    lo, hi = SCORE_RANGE
    if not lo <= v <= hi:
        raise UsageError(f"{path} line {line}: {col} {v} is outside {lo:g}-{hi:g}")
    return v


def rated_vectors(lib: Library, ratings: Ratings) -> tuple[np.ndarray, np.ndarray | None]:
    """(audio float32 (N, dim) pooled track vectors, prompt text vectors float32 (N, dim) or None) of the
    rated tracks of an open Library; prompts are embedded with the library's encoder (never truncated)."""

    pos = {str(t): i for i, t in enumerate(lib.tracks.column("track_id").to_pylist())}
    rows = np.asarray([pos[t] for t in ratings.track_ids], dtype=np.int64)
    starts = lib.tracks.column("frame_start").to_numpy(zero_copy_only=False)[rows]
    counts = lib.tracks.column("frame_count").to_numpy(zero_copy_only=False)[rows]
    audio = pooled_track_vectors(lib.store, starts, counts)
    text = None
    if ratings.prompts is not None:
        uniq = sorted(set(ratings.prompts))
        vecs = lib.embed_text(uniq)
        at = {p: i for i, p in enumerate(uniq)}
        text = vecs[[at[p] for p in ratings.prompts]]
    return audio, text


def train_on_library(lib: Library, ratings: Ratings, config: MosTrainConfig | None = None,
                     on_epoch: EpochCallback | None = None) -> MosHead:
    audio, text = rated_vectors(lib, ratings)
    return train_head(lib.manifest.encoder, audio, ratings.impression, text, ratings.alignment, config, on_epoch)


def predictions_table(track_ids: list[str], pred: MosPrediction) -> pa.Table:
    """The library's ``mos`` table: track_id, mos_impression, mos_alignment (null where not predicted)."""

    n = len(track_ids)
    ali = np.full(n, np.nan, np.float32) if pred.alignment is None else pred.alignment
    cols = {"track_id": pa.array(track_ids, pa.string()), "mos_impression": pa.array(pred.impression, pa.float32()),
            "mos_alignment": pa.array(ali, pa.float32(), from_pandas=True)}  # NaN → null
    return pa.table(cols)


def predict_library(root: str | Path, head_path: str | Path, prompts: dict[str, str] | None = None,
                    device: str = "auto") -> tuple[list[str], MosPrediction]:
    """Predict both scores for every track of the library and store them in its ``mos`` table (one commit).
    Alignment needs a prompt per track (``prompts``: track id → text); other tracks get null."""

    with LibraryWriter(Path(root)) as writer:
        lib = Library.open(root, device=device)
        head = load_head(head_path, lib.manifest.encoder)
        ids = [str(t) for t in lib.tracks.column("track_id").to_pylist()]
        audio = library_track_vectors(lib.store, lib.tracks)
        pred = head.predict(audio)
        if prompts and head.alignment is not None:
            rows = [i for i, t in enumerate(ids) if t in prompts]
            if not rows:  # else every alignment would be null, with no word of why
                raise UsageError(f"none of the {len(prompts)} prompts is keyed by a track id of the library "
                                 f"(first: {next(iter(prompts))}); key them by the tracks table's track_id")
            text = lib.embed_text([prompts[ids[i]] for i in rows])
            part = head.predict(audio[rows], text)
            ali = np.full(len(ids), np.nan, np.float32)
            assert part.alignment is not None
            ali[rows] = part.alignment
            pred = MosPrediction(pred.impression, ali)
        writer.put_table(MOS_TABLE, predictions_table(ids, pred))
        writer.commit()
    return ids, pred
