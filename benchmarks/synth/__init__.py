"""Synthetic music with known structure: scores, rendered audio, captions at three levels.

The demo (`songseek demo`), `songseek synth` and the demo-model evaluation draw their tracks from here.
"""

from songseek.benchmarks.synth.dataset import (
    AUDIO_FORMATS,
    SynthTrack,
    iter_tracks,
    load_manifest,
    synth_track,
    write_dataset,
)

__all__ = ["AUDIO_FORMATS", "SynthTrack", "iter_tracks", "load_manifest", "synth_track", "write_dataset"]
