"""Response and request bodies: what /openapi.json promises and what responses are checked against."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="One line naming what was wrong and how to fix it.")


class HitOut(BaseModel):
    """The fields of `songseek search --json`, plus where to hear the segment."""

    rank: int
    track_id: str
    path: str
    score: float
    start_s: float
    end_s: float
    r_k: float
    r_t: float
    best_window: float
    candidate_score: float
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration_s: float = 0.0
    rerank: str = Field("", description="The rerank mode that ranked this query: auto resolves to part, whole "
                        "or hedge by the query's form.")
    audio_url: str = Field(description="Relative to the server; the #t= fragment starts the segment.")


class SearchOut(BaseModel):
    generation: int
    random_weights: bool
    hits: list[HitOut]


class BatchIn(BaseModel):
    """Give ``texts`` or ``vectors`` (one query per row), not both."""

    texts: list[str] | None = None
    vectors: list[list[float]] | None = None


class BatchOut(BaseModel):
    generation: int
    random_weights: bool
    results: list[list[HitOut]]


class HealthOut(BaseModel):
    status: str
    generation: int
    tracks: int
    frames: int
    encoder: str
    checkpoint: str
    random_weights: bool
    dim: int
    window_s: float
    hop_s: float
    inflight: int
    capacity: int
    warnings: list[str]
    reload_error: str


class WindowOut(BaseModel):
    start_s: float
    end_s: float


class TimelineOut(BaseModel):
    """Per window of the track: cosine with the query, and the temporal attention softmax(cos / tau) the
    fusion gives it; ``segment`` is the best segment exactly as search picks it."""

    similarity: list[float]
    attention: list[float]
    segment: WindowOut
    score: float


class TrackOut(BaseModel):
    track_id: str
    path: str
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    year: int | None = None
    duration_s: float
    audio_url: str
    windows: list[WindowOut]
    tags: dict[str, float]
    timeline: TimelineOut | None = None


class FacetsOut(BaseModel):
    artists: list[str]
    albums: list[str]
    genres: list[str]
    year_min: int | None
    year_max: int | None
    tags: list[str]


class PeaksOut(BaseModel):
    """The track's waveform: min and max of the decoded samples (mono, its own sample rate) in each of
    ``bins`` contiguous bins; bin i spans ``edges_s[i]`` to ``edges_s[i + 1]`` seconds."""

    track_id: str
    generation: int
    bins: int
    sample_rate: int
    duration_s: float
    mins: list[float]
    maxs: list[float]
    edges_s: list[float]
