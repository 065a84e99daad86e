"""Train the bundled ``demo`` encoder on synthetic music (CPU, minutes, seeded and reproducible).

    python scripts/train_demo_model.py --out engine/encoders/demo_model

Data: ``--tracks`` tracks of generator seed ``--seed`` rendered in memory, turned into log-mel
spectrograms once. Each step takes ``--batch-tracks`` tracks and ``--windows-per-track`` 10 s windows of
each, every window lying inside one section (sections drawn in proportion to their length), and
optimises two symmetric InfoNCE losses with one learned temperature:

- windows against a freshly worded caption of their section (a sentence or a tag list); windows whose
  sections have the same facts (instruments, dynamics, density, tempo class, mode) count as positives
  of each other's captions;
- the mean of a track's window vectors against its whole-track description (truncated to 64 tokens),
  weighted by ``--track-loss``.

Writes ``config.json`` (architecture + provenance: generator version, seed, track count, steps,
time), ``vocab.json`` (words of the training captions) and ``model.safetensors``. With
``--eval-tracks N`` it then measures retrieval on N held-out tracks of ``--eval-seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from songseek.benchmarks.synth.captions import section_caption, section_tags
from songseek.benchmarks.synth.dataset import iter_tracks
from songseek.benchmarks.synth.score import GENERATOR_VERSION, Score
from songseek.engine.encoders.demo import (
    CONFIG_FILE,
    PAD,
    UNK,
    VOCAB_FILE,
    WEIGHTS_FILE,
    DemoConfig,
    Tokenizer,
    tokenize,
)


@dataclass
class Corpus:
    """Training data in memory: ``mels[i]`` float16 tensor (n_mels, frames) of track i, its score and
    whole-track caption; ``keys[i][s]`` the fact-signature id of section s of track i."""

    mels: list
    scores: list[Score]
    track_captions: list[str]
    keys: list[list[int]]


def build_corpus(seed: int, n_tracks: int, cfg: DemoConfig, log: bool = True) -> Corpus:
    import torch

    from songseek.engine.encoders.demo_net import LogMel

    mel = LogMel(cfg).eval()
    mels, scores, captions, keys = [], [], [], []
    signature: dict[tuple, int] = {}
    t0 = time.perf_counter()
    for i, (track, audio) in enumerate(iter_tracks(seed, n_tracks)):
        with torch.inference_mode():
            mels.append(mel(torch.from_numpy(audio)[None])[0].to(torch.float16))
        s = track.score
        scores.append(s)
        captions.append(track.caption)
        keys.append([signature.setdefault((sec.instruments, sec.dynamics, sec.density, s.tempo_class, s.mode),
                                          len(signature)) for sec in s.sections])
        if log and (i + 1) % 100 == 0:
            print(f"  rendered {i + 1}/{n_tracks} tracks ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return Corpus(mels, scores, captions, keys)


def build_vocab(corpus: Corpus, seed: int, per_section: int = 6) -> list[str]:
    """Words of the training captions (sentences and tags, several wordings per section), most
    frequent first; words seen fewer than twice are left to the n-gram path."""
    rng = np.random.default_rng([seed, 7])
    counts: Counter[str] = Counter()
    for score in corpus.scores:
        for s in range(len(score.sections)):
            for _ in range(per_section):
                counts.update(tokenize(section_caption(score, s, rng)))
            counts.update(tokenize(section_tags(score, s, rng)))
    for caption in corpus.track_captions:
        counts.update(tokenize(caption)[:64])
    words = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *words]


def _sample_batch(corpus: Corpus, tracks: np.ndarray, per_track: int, frames: int, hop: int, sr: int,
                  rng: np.random.Generator) -> tuple[list, list[str], list[int], list[str]]:
    """Windows (float32 (n_mels, frames) tensors), their section captions and keys, and the tracks'
    whole-track captions."""
    windows, texts, keys = [], [], []
    for t in tracks:
        score, mel = corpus.scores[t], corpus.mels[t]
        secs = score.sections
        p = np.array([s.duration_s for s in secs])
        picks = rng.choice(len(secs), size=per_track, replace=len(secs) < per_track, p=p / p.sum())
        for s in picks:
            f0 = int(round(secs[s].start_s * sr / hop))
            f1 = int(round(secs[s].end_s * sr / hop))
            last = max(f0, min(f1, mel.shape[1]) - frames)
            start = int(rng.integers(f0, last + 1))
            windows.append(mel[:, start:start + frames].float())
            wording = section_caption if rng.random() < 0.7 else section_tags
            texts.append(wording(score, int(s), rng))
            keys.append(corpus.keys[t][s])
    return windows, texts, keys, [corpus.track_captions[t] for t in tracks]


def train(corpus: Corpus, cfg: DemoConfig, words: list[str], steps: int, batch_tracks: int = 32,
          per_track: int = 4, lr: float = 2e-3, track_loss: float = 0.5, seed: int = 0,
          log_every: int = 50) -> tuple[object, dict]:
    """Train a DemoCLAP from scratch; returns (model in eval mode, training stats)."""
    import torch
    import torch.nn.functional as F

    from songseek.engine.encoders.demo_net import DemoCLAP

    torch.manual_seed(seed)
    model = DemoCLAP(cfg, len(words))
    tok = Tokenizer(words, cfg)
    with torch.no_grad():  # per-band standardisation from the training data
        sample = torch.cat([m[:, ::8].float() for m in corpus.mels], dim=1)
        model.audio.mel_mean.copy_(sample.mean(dim=1))
        model.audio.mel_std.copy_(sample.std(dim=1).clamp(min=1e-3))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "ngrams" not in n and "words" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "ngrams" not in n and "words" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.02}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    rng = np.random.default_rng([seed, 1])
    frames = 1 + int(round(cfg.window_s * cfg.sample_rate)) // cfg.hop
    order = np.zeros(0, np.int64)
    model.train()
    t0 = time.perf_counter()
    history = []
    for step in range(steps):
        while order.size < batch_tracks:
            order = np.concatenate([order, rng.permutation(len(corpus.mels))])
        tracks, order = order[:batch_tracks], order[batch_tracks:]
        windows, texts, keys, track_texts = _sample_batch(corpus, tracks, per_track, frames, cfg.hop,
                                                          cfg.sample_rate, rng)
        audio = F.normalize(model.audio(torch.stack(windows)), dim=-1)
        sec_len = max(len(tokenize(t)) for t in texts)
        text = F.normalize(torch.cat([  # pad each group to its own longest text (training only)
            model.text(tok.encode(texts, length=min(sec_len, cfg.max_tokens), drop_words=0.15, rng=rng)),
            model.text(tok.encode(track_texts, drop_words=0.15, rng=rng))]), dim=-1)
        scale = model.logit_scale.clamp(max=math.log(100.0)).exp()
        k = torch.as_tensor(keys)
        same = (k[:, None] == k[None, :]).float()
        target = same / same.sum(dim=1, keepdim=True)
        logits = scale * audio @ text[: len(texts)].T
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean()
                      - (target * logits.log_softmax(0)).sum(0).mean())
        if track_loss > 0:
            pooled = F.normalize(audio.reshape(batch_tracks, per_track, -1).mean(dim=1), dim=-1)
            tl = scale * pooled @ text[len(texts):].T
            labels = torch.arange(batch_tracks)
            loss = loss + track_loss * 0.5 * (F.cross_entropy(tl, labels) + F.cross_entropy(tl.T, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        history.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {np.mean(history[-log_every:]):.3f} "
                  f"scale {float(scale):.1f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    model.eval()
    stats = {"steps": steps, "final_loss": round(float(np.mean(history[-50:])), 4),
             "train_s": round(time.perf_counter() - t0, 1)}
    return model, stats


def save(model: object, cfg: DemoConfig, words: list[str], out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    save_file(state, str(out / WEIGHTS_FILE), metadata={"model_version": cfg.model_version})
    (out / WEIGHTS_FILE).chmod(0o644)  # package data must be readable by everyone
    (out / VOCAB_FILE).write_text(json.dumps(words, indent=0) + "\n", encoding="utf-8")
    (out / CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/train_demo_model.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    ap.add_argument("--tracks", type=int, default=500, help="training tracks to generate")
    ap.add_argument("--seed", type=int, default=1, help="generator seed of the training data")
    ap.add_argument("--torch-seed", type=int, default=0, help="initialisation and data-order seed")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch-tracks", type=int, default=32)
    ap.add_argument("--windows-per-track", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--track-loss", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tracks", type=int, default=0, help="held-out tracks to evaluate on afterwards")
    ap.add_argument("--eval-seed", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = DemoConfig()
    print(f"rendering {args.tracks} training tracks (seed {args.seed}) ...", file=sys.stderr)
    corpus = build_corpus(args.seed, args.tracks, cfg)
    words = build_vocab(corpus, args.seed)
    data_s = time.perf_counter() - t0
    print(f"data ready in {data_s:.0f} s; vocabulary {len(words)} words; training ...", file=sys.stderr)
    model, stats = train(corpus, cfg, words, args.steps, args.batch_tracks, args.windows_per_track, args.lr,
                         args.track_loss, args.torch_seed)
    audio_h = sum(s.duration_s for s in corpus.scores) / 3600
    cfg = replace(cfg, training={
        "data_version": f"{GENERATOR_VERSION}/seed{args.seed}/{args.tracks}tracks",
        "generator_version": GENERATOR_VERSION, "generator_seed": args.seed, "tracks": args.tracks,
        "audio_hours": round(audio_h, 2), "torch_seed": args.torch_seed, "batch_tracks": args.batch_tracks,
        "windows_per_track": args.windows_per_track, "lr": args.lr, "track_loss": args.track_loss,
        "threads": args.threads, "data_s": round(data_s, 1), "torch_version": torch.__version__,
        "held_out_seed": args.eval_seed, **stats,
        "command": "python scripts/train_demo_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    save(model, cfg, words, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s total", file=sys.stderr)
    if args.eval_tracks:
        from songseek.benchmarks.demo_eval import embed_synth_set, evaluate, format_table
        from songseek.engine.encoders.demo import load

        enc = load(str(args.out), "cpu", False)
        emb = embed_synth_set(enc, args.eval_seed, args.eval_tracks)
        print(format_table(evaluate(emb)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
