"""Request parameters → SearchOptions exactly as `songseek search` builds them, plus the filters the page
offers (turned into one `where` predicate with quoted literals) and the per-artist cap."""

from __future__ import annotations

import dataclasses
from typing import Literal, TypeVar
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from songseek.engine.errors import QueryError
from songseek.engine.query.diversity import cap_per_artist
from songseek.engine.query.filters import conjoin
from songseek.engine.query.fusion import params_for_hop
from songseek.engine.query.search import Hit, Library, SearchOptions
from songseek.server.config import Limits

# fusion.RERANK_MODES (a test keeps them equal)
Rerank = Literal["auto", "hedge", "part", "whole", "align", "fusion", "blend", "mean", "max", "none"]


class SearchParams(BaseModel):
    """Every `songseek search` option, a per-artist cap, and structured filters (ANDed with ``where``).

    Parsed from the query string by ``from_query`` (one pydantic call on the event loop) and declared in
    the OpenAPI schema by ``query_parameters``: FastAPI's own query-model extraction walks every field's
    annotation on every request (about 0.4 ms of CPU a request for these 18 fields, measured)."""

    k: int = Field(10, ge=1, description="Tracks to return.")
    rerank: Rerank | None = Field(None, description="auto (part, whole or hedge by the query's form), hedge, part, "
                                  "whole, fusion (CoLLAP), blend, mean, max or none; default: the library's saved "
                                  "rerank (`songseek bench rerank --save`), else auto.")
    candidates: int = Field(200, ge=1, description="Tracks reranked per query.")
    where: str | None = Field(None, description="SQL predicate over the tracks table (DuckDB, sandboxed).")
    exact: bool = Field(False, description="Skip FAISS: brute force over every frame.")
    nprobe: int | None = Field(None, ge=1, description="IVF lists probed (default: the library's own).")
    kernel_s: float | None = Field(None, description="Fusion kernel length in seconds.")
    stride_s: float | None = Field(None, description="Fusion kernel stride in seconds.")
    segment_s: float | None = Field(None, gt=0, description="Longest best segment in seconds: the best "
                                    "run of windows up to that length (default: the library's rerank settings, "
                                    "30 s unless saved otherwise).")
    temperature: float | None = Field(None, description="Fusion softmax temperature.")
    per_artist: int | None = Field(None, ge=1, description="At most this many hits per artist.")
    artist: str | None = Field(None, description="Only this artist (exact).")
    album: str | None = Field(None, description="Only this album (exact).")
    genre: str | None = Field(None, description="Only this genre (exact).")
    year_min: int | None = Field(None, description="Only tracks from this year on.")
    year_max: int | None = Field(None, description="Only tracks up to this year.")
    tag: str | None = Field(None, description="Only tracks with this auto-tag (`songseek tag`) ...")
    tag_min: float = Field(0.3, description="... at least this strong.")

    def checked(self, limits: Limits) -> SearchParams:
        """Refuse values past the server's limits (QueryError → 400) before any work is queued."""
        if not 1 <= self.k <= limits.max_k:
            raise QueryError(f"k must be between 1 and {limits.max_k} (got {self.k})")
        if not 1 <= self.candidates <= limits.max_candidates:
            raise QueryError(f"candidates must be between 1 and {limits.max_candidates} (got {self.candidates})")
        if self.nprobe is not None and not 1 <= self.nprobe <= limits.max_nprobe:
            raise QueryError(f"nprobe must be between 1 and {limits.max_nprobe} (got {self.nprobe})")
        if self.per_artist is not None and self.per_artist < 1:
            raise QueryError(f"per_artist must be at least 1 (got {self.per_artist})")
        for name in ("kernel_s", "stride_s", "segment_s", "temperature"):
            value = getattr(self, name)
            if value is not None and not (0 < value < 1e6):
                raise QueryError(f"{name} must be a positive number of reasonable size (got {value})")
        if self.where is not None and len(self.where) > limits.where_chars:
            raise QueryError(f"where is {len(self.where):,} characters; at most {limits.where_chars:,} are accepted")
        for name in ("artist", "album", "genre", "tag"):
            value = getattr(self, name)
            if value is not None and len(value) > limits.max_query_chars:
                raise QueryError(f"{name} is longer than {limits.max_query_chars} characters")
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            # no track can match: say so rather than answer an empty list that reads as "nothing like it"
            raise QueryError(f"year_min ({self.year_min}) is after year_max ({self.year_max}); swap them")
        return self

    def predicate(self, has_tags: bool) -> str | None:
        """``where`` ANDed with the structured filters; None when there are none."""
        parts = [self.where] if self.where is not None and self.where.strip() else []
        if self.where is not None and not self.where.strip():
            raise QueryError("where is empty: give a SQL predicate such as \"artist = 'Miles Davis'\"")
        for column in ("artist", "album", "genre"):
            value = getattr(self, column)
            if value:
                parts.append(f"{column} = {_literal(value)}")
        if self.year_min is not None:
            parts.append(f"year >= {int(self.year_min)}")
        if self.year_max is not None:
            parts.append(f"year <= {int(self.year_max)}")
        if self.tag:
            if not has_tags:
                raise QueryError("this library has no tags: run `songseek tag` on it, or drop the tag filter")
            parts.append(f"tag({_literal(self.tag)}) >= {float(self.tag_min)!r}")
        return conjoin(parts) if parts else None

    def options(self, lib: Library, k: int | None = None) -> SearchOptions:
        """SearchOptions as the CLI builds them: the library's saved rerank mode and parameters unless some
        are given here (then on top of the saved ones, at the library's hop)."""
        fusion = None
        if any(x is not None for x in (self.kernel_s, self.stride_s, self.segment_s, self.temperature)):
            fusion = params_for_hop(lib.manifest.hop_s, lib.rerank_settings().params, self.kernel_s, self.stride_s,
                                    self.segment_s, window_s=lib.manifest.window_s)
            if self.temperature is not None:
                fusion = dataclasses.replace(fusion, temperature=self.temperature)
        want = self.k if k is None else k
        if self.per_artist is not None:  # rank every reranked candidate so the cap can still fill k
            want = max(want, self.candidates)
        return SearchOptions(k=want, rerank=self.rerank, candidates=self.candidates,
                             where=self.predicate("tags" in lib.extra_tables), fusion=fusion, nprobe=self.nprobe,
                             exact=self.exact).validated()

    def finish(self, hits: list[Hit], exclude: str | None = None) -> list[Hit]:
        """Drop ``exclude`` (more-like-this leaves out its own track), apply the cap, keep k, renumber."""
        if exclude is not None:
            hits = [h for h in hits if h.track_id != exclude]
        elif self.per_artist is None and len(hits) <= self.k:
            return hits  # already ranked 1..k by the engine (renumbering copies every hit: ~90 µs for ten)
        return cap_per_artist(hits, self.per_artist or len(hits) + 1, self.k) if hits else []


M = TypeVar("M", bound=BaseModel)


def from_query(request: Request, model: type[M]) -> M:
    """``model`` from the request's query string; a bad value is a RequestValidationError (422), as when
    FastAPI parses it."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None


def query_parameters(model: type[BaseModel]) -> list[dict[str, object]]:
    """OpenAPI ``parameters`` (in: query) for the fields of ``model``, for a route's ``openapi_extra``."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "description": prop.get("description", ""),
             "schema": {k: v for k, v in prop.items() if k != "description"}}
            for name, prop in schema["properties"].items()]


def _literal(value: str) -> str:
    """A SQL string literal (standard SQL: a quote inside is doubled; DuckDB has no backslash escapes)."""
    return "'" + value.replace("'", "''") + "'"


def audio_url(hit: Hit) -> str:
    return f"{track_audio_url(hit.track_id)}#t={hit.segment.start_s:g},{hit.segment.end_s:g}"


def track_audio_url(track_id: str) -> str:
    return f"/api/audio/{quote(track_id, safe='')}"


def hit_json(hit: Hit) -> dict[str, object]:
    """The CLI's `--json` hit (Hit.to_json) plus ``audio_url``."""
    return {**hit.to_json(), "audio_url": audio_url(hit)}
