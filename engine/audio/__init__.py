"""Audio in: decoding any common format to mono float32 at a model's rate, and cutting it into windows.

Lives in the engine (not the indexers) because query-by-example decodes audio too.
"""

from __future__ import annotations

from .decode import AUDIO_EXTENSIONS, AudioInfo, decode, decode_stream, probe
from .windowing import frame_windows, iter_windows, window_bounds

__all__ = ["AUDIO_EXTENSIONS", "AudioInfo", "decode", "decode_stream", "frame_windows", "iter_windows", "probe",
           "window_bounds"]
