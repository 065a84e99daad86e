"""A small spectral fingerprint of our own, to confirm a candidate duplicate pair from the audio itself.

Window vectors say two tracks *sound* alike; they cannot tell two pieces with the same instruments, tempo
and key apart. The fingerprint can: each 256 ms frame (every 32 ms) of the audio (8 kHz mono, so every codec and
resampling keeps the band) gets 32 bits, the signs of the time difference of adjacent-band log-energy
differences over 33 log-spaced bands between 300 and 3000 Hz (Haitsma & Kalker 2002). The bits survive
re-encoding, gain and resampling; other notes flip half of them. The same notes played by other instruments
(a version) keep many bits, so the band energies are compared too: smoothed over 256 ms, so that a copy
offset by a fraction of a frame (a trim) still compares like for like.

``compare`` cuts the shorter track into blocks of ``BLOCK`` frames (about 2 s) and finds each block's best
time lag in the other track (one FFT correlation per block). The result says how much of the shorter
track is found (coverage), whether it is found at one lag (a trim or added silence) or several (a cut or a
tempo change; ``lag_cover`` checks the one lag frame by frame, finer than a block), and, over the matched
frames, how far the band balance (EQ), the loudness envelope (compression) and the timbre (the band
differences left once the EQ and each frame's gain are removed: other instruments) differ, and whether a
changed loudness envelope is a function of the loudness (``level_corr``: a compressor or limiter turns loud
passages down more than quiet ones; the same notes played again with other velocities change the loudness
note by note, whatever its level). Arrays in, arrays out; ``duplicates.py`` decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 8000
N_FFT = 2048                    # 256 ms frames ...
HOP = 256                       # ... every 32 ms: two copies offset by half a hop still share 94 % of a frame
FRAME_S = HOP / RATE
N_BANDS = 33                    # 32 bits per frame
F_LO, F_HI = 300.0, 3000.0
BLOCK = 64                      # frames per matched block (about 2 s: a 3 % tempo change drifts 60 ms)
MATCH_AGREEMENT = 0.3           # bit agreement (+1/-1 correlation) a block needs; unrelated blocks: about 0.1
SILENT_DB = -55.0               # frames this far below the track's loudest frame are silence
SMOOTH = 8                      # band energies are averaged over 8 frames (256 ms) before they are compared
LAG_SMOOTH = 16                 # frames (0.5 s) averaged when checking the one lag frame by frame
ONE_LAG_SHARE = 0.5             # a block is at the one lag when it agrees there at least half as well as at its best


@dataclass(frozen=True)
class Fingerprint:
    """``bits`` float32 (T, 32) of +1/-1; ``bands`` float32 (T, 33) band energies in dB, averaged over
    ``SMOOTH`` frames; ``active`` bool (T,) frames that are not silence; ``loud`` float32 (T,) the
    loudness of the whole band (0-4 kHz, where a compressor's bass drum is) in dB, averaged over ``SMOOTH`` frames."""

    bits: np.ndarray
    bands: np.ndarray
    active: np.ndarray
    loud: np.ndarray | None = None

    @property
    def seconds(self) -> float:
        return len(self.bits) * FRAME_S


@dataclass(frozen=True)
class FingerprintMatch:
    """How the shorter track (A) is found in the other (B). ``coverage``: share of A's non-silent blocks
    found; ``one_lag``: share of the found blocks at the commonest lag (within a frame); ``lag_s``: that
    lag, seconds B is behind A; ``agreement``: mean bit agreement of found blocks; ``band_db``: the band-balance
    tilt (dB: low third of the bands minus high third, gain removed); ``dynamics_db``: the spread of the frame-loudness
    difference (dB, gain removed); ``matched_s``: seconds of A found; ``lag_cover``: share of A's non-silent
    frames that agree with B at the one (commonest) lag; ``timbre_db``: the median over bands of the spread in
    time of the band differences once each band's and each frame's mean difference is removed; ``level_corr``:
    the correlation, over the matched frames, of the whole-band loudness difference with the pair's mean
    whole-band loudness (a compressed or limited master: 0.87-1.0 in magnitude on generator seed 9; two
    sections of one score that differ only in note velocities: -0.24; 0 when no loudness is known)."""

    coverage: float
    one_lag: float
    two_lags: float
    lag_s: float
    agreement: float
    band_db: float
    dynamics_db: float
    matched_s: float
    lag_cover: float = 0.0
    timbre_db: float = 0.0
    level_corr: float = 0.0


def _band_edges() -> np.ndarray:
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    edges = np.geomspace(F_LO, F_HI, N_BANDS + 1)
    return np.searchsorted(freqs, edges)


def fingerprint(audio: np.ndarray) -> Fingerprint:
    """Fingerprint of mono float32 audio at ``RATE`` Hz (a clip shorter than one frame gives T = 0)."""
    x = np.asarray(audio, dtype=np.float32)
    n_frames = max(0, 1 + (len(x) - N_FFT) // HOP) if len(x) >= N_FFT else 0
    if n_frames == 0:
        return Fingerprint(np.zeros((0, N_BANDS - 1), np.float32), np.zeros((0, N_BANDS), np.float32),
                           np.zeros(0, bool), np.zeros(0, np.float32))
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2
    edges = _band_edges()
    # float64: a band is a difference of the running sum, and float32 lost up to 0.7 dB on quiet bands
    csum = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(spec, axis=1, dtype=np.float64)], axis=1)
    energy = csum[:, edges[1:]] - csum[:, edges[:-1]]
    bands = 10.0 * np.log10(energy + 1e-10)
    diff = bands[:, :-1] - bands[:, 1:]
    bits = np.sign(np.diff(diff, axis=0, prepend=diff[:1]))
    bits[bits == 0] = 1.0
    loud = 10.0 * np.log10(energy.sum(axis=1) + 1e-10)
    active = loud > loud.max() + SILENT_DB
    smooth = _moving_mean(energy, SMOOTH)
    whole = 10.0 * np.log10(_moving_mean(spec.sum(axis=1), SMOOTH) + 1e-10)
    return Fingerprint(bits.astype(np.float32), (10.0 * np.log10(smooth + 1e-10)).astype(np.float32), active,
                       whole.astype(np.float32))


def _moving_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving mean over ``k`` rows of ``x`` (T, ...), shorter at the ends."""
    c = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)], axis=0)
    n = len(x)
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(lo + k, 0, n)
    width = (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))
    return np.asarray((c[hi] - c[lo]) / np.maximum(width, 1))


def _robust_std(x: np.ndarray, axis: int = 0) -> np.ndarray:
    q75, q25 = np.percentile(x, [75, 25], axis=axis)
    return np.asarray((q75 - q25) / 1.349)  # transients do not dominate


def block_lags(a_bits: np.ndarray, b_bits: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For each whole block of ``block`` frames of A: the lag (frames; B frame = A frame + lag) where it
    agrees best with B, lying wholly inside B, and that agreement (mean of bit products, -1..1).

    Returns (lag int64 (n_blocks,), agreement float64 (n_blocks,)); agreement -inf where B is shorter
    than a block. One FFT correlation of every block against the whole of B."""
    lags, agree, _ = block_match(a_bits, b_bits, block)
    return lags, agree


def block_match(a_bits: np.ndarray, b_bits: np.ndarray, block: int = BLOCK
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """``block_lags`` and the one lag of the whole track: the lag whose agreement summed over all blocks
    is greatest. Repetitive music (a loop, a repeated bar) matches a block at several lags nearly equally
    well, so each block's own best lag may be any of them; summed over blocks, the true lag wins (the
    parts that do not repeat agree only there). Returns (lags, agreement, global lag)."""
    n_blocks = len(a_bits) // block
    nb = len(b_bits)
    lags = np.zeros(n_blocks, np.int64)
    agree = np.full(n_blocks, -np.inf)
    if n_blocks == 0 or nb < block:
        return lags, agree, 0
    nfft = 1 << int(np.ceil(np.log2(nb + block)))
    fb = np.fft.rfft(b_bits, nfft, axis=0)                           # (F, bits)
    blocks = a_bits[:n_blocks * block].reshape(n_blocks, block, -1)
    positions = nb - block + 1
    shift = (n_blocks - 1) * block                                   # totals[lag + shift]
    totals = np.zeros(positions + shift)
    for lo in range(0, n_blocks, 16):                                  # 16 blocks at a time bounds memory
        fa = np.fft.rfft(blocks[lo:lo + 16], nfft, axis=1)             # (k, F, bits)
        corr = np.fft.irfft(np.einsum("fb,kfb->kf", fb, np.conj(fa)), nfft, axis=1)[:, :positions]
        corr /= block * blocks.shape[2]
        best = np.argmax(corr, axis=1)
        lags[lo:lo + 16] = best - (np.arange(lo, lo + len(best)) * block)
        agree[lo:lo + 16] = corr[np.arange(len(best)), best]
        for r, k in enumerate(range(lo, lo + len(best))):              # block k at position p has lag p - k·block
            totals[shift - k * block: shift - k * block + positions] += corr[r]
    return lags, agree, int(np.argmax(totals)) - shift


def _agreement_at(a_bits: np.ndarray, b_bits: np.ndarray, block: int, lag: int) -> np.ndarray:
    """Each whole block's agreement with B at one ``lag`` (-inf where the block falls outside B)."""
    n_blocks = len(a_bits) // block
    p = np.arange(n_blocks) * block + lag
    inside = (p >= 0) & (p + block <= len(b_bits))
    out = np.full(n_blocks, -np.inf)
    for k in np.flatnonzero(inside).tolist():
        out[k] = float(np.einsum("tb,tb->", a_bits[k * block:(k + 1) * block], b_bits[p[k]:p[k] + block]))
    return out / (block * max(a_bits.shape[1], 1))


def compare(a: Fingerprint, b: Fingerprint, block: int = BLOCK) -> FingerprintMatch:
    """Find the shorter of two fingerprints in the other (see the module docstring)."""
    if a.seconds > b.seconds:
        a, b = b, a
    block = min(block, max(16, len(a.bits) // 2))  # a clip of a few seconds still gets two blocks
    lags, agree, mode = block_match(a.bits, b.bits, block)
    n_blocks = len(lags)
    blk_active = a.active[:n_blocks * block].reshape(n_blocks, block).mean(axis=1) >= 0.5 if n_blocks else \
        np.zeros(0, bool)
    found = (agree >= MATCH_AGREEMENT) & blk_active
    if blk_active.sum() == 0 or found.sum() == 0:
        return FingerprintMatch(0.0, 0.0, 0.0, 0.0, float(agree.max(initial=0.0)), 0.0, 0.0, 0.0)
    # A found block is at the one lag when it matches there too (in a loop its own best may be elsewhere,
    # a sub-frame offset better: 0.95 against 0.8 at the one lag), at least half as well as at its own best
    # lag: when a cut removes bars of a section that repeats (a drum pattern), the bars before the cut agree
    # at 0.33-0.40 at the one lag (the lag of the longer part after the cut), at 1.0 at their own (seed 5).
    at_lag = _agreement_at(a.bits, b.bits, block, mode)
    at_mode = found & (at_lag >= MATCH_AGREEMENT) & (at_lag >= ONE_LAG_SHARE * agree)
    lags = np.where(at_mode, mode, lags)
    one_lag = float(at_mode.sum() / found.sum())
    values, counts = np.unique(lags[found & ~at_mode], return_counts=True)
    near = np.array([counts[np.abs(values - v) <= 1].sum() for v in values])
    two_lags = one_lag + (float(near.max() / found.sum()) if len(near) else 0.0)
    # Band balance and loudness envelope over the found blocks' frames, each at its own lag.
    fa = (np.arange(n_blocks * block).reshape(n_blocks, block))[found].ravel()
    fb = fa + np.repeat(lags[found], block)
    both = a.active[fa] & b.active[fb]
    band_db = dynamics_db = timbre_db = level_corr = 0.0
    if both.sum() >= block // 4:
        d = a.bands[fa[both]].astype(np.float64) - b.bands[fb[both]]
        per_band = np.median(d, axis=0)
        third = len(per_band) // 3  # the tilt between low and high bands: one odd band does not count
        band_db = float(abs(per_band[:third].mean() - per_band[-third:].mean()))
        dynamics_db = float(_robust_std(_loudness(a.bands[fa[both]]) - _loudness(b.bands[fb[both]])))
        rest = d - per_band                                # EQ removed ...
        rest -= np.median(rest, axis=1, keepdims=True)     # ... and each frame's gain (compression)
        timbre_db = float(np.median(_robust_std(rest)))
        if a.loud is not None and b.loud is not None:
            level_corr = _level_corr(a.loud[fa[both]], b.loud[fb[both]])
    return FingerprintMatch(
        coverage=float(found.sum() / blk_active.sum()), one_lag=one_lag, two_lags=min(two_lags, 1.0),
        lag_s=mode * FRAME_S, agreement=float(agree[found].mean()), band_db=band_db, dynamics_db=dynamics_db,
        matched_s=float(found.sum() * block * FRAME_S), lag_cover=_lag_cover(a, b, mode), timbre_db=timbre_db,
        level_corr=level_corr)


def _lag_cover(a: Fingerprint, b: Fingerprint, lag: int) -> float:
    """Share of A's non-silent frames whose bits agree with B's at ``lag`` (B frame = A frame + lag), the
    agreement averaged over ``LAG_SMOOTH`` frames: a cut inside a block moves the lag for part of it."""
    ia = np.arange(len(a.bits))
    ok = (ia + lag >= 0) & (ia + lag < len(b.bits))
    prod = np.zeros(len(ia))
    prod[ok] = np.einsum("tb,tb->t", a.bits[ia[ok]], b.bits[ia[ok] + lag]) / a.bits.shape[1]
    at_lag = (_moving_mean(prod, LAG_SMOOTH) >= MATCH_AGREEMENT) & a.active
    return float(at_lag.sum() / max(int(a.active.sum()), 1))


def _level_corr(la: np.ndarray, lb: np.ndarray) -> float:
    """Correlation of the loudness difference ``la - lb`` with the mean loudness (dB arrays of matched
    frames); 0 where either is constant. A level mapping (compression, limiting, a fade) makes the
    difference a function of the loudness; independent changes per note leave them uncorrelated."""
    la, lb = np.asarray(la, np.float64), np.asarray(lb, np.float64)
    d, m = la - lb, (la + lb) / 2
    sd, sm = float(d.std()), float(m.std())
    if len(d) < 2 or sd < 1e-6 or sm < 1e-6:
        return 0.0
    return float(np.mean((d - d.mean()) * (m - m.mean())) / (sd * sm))


def _loudness(bands_db: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.sum(10.0 ** (np.asarray(bands_db, np.float64) / 10.0), axis=1) + 1e-10)
