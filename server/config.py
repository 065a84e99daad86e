"""What a server is told at start: the library, who may call it, and the limits every request meets."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from songseek.engine.errors import UsageError
from songseek.engine.query.filters import FilterLimits

TOKEN_ENV = "SONGSEEK_TOKEN"


@dataclass(frozen=True)
class Limits:
    """Bounds on a request; a request past one gets a 4xx naming the bound.

    ``workers`` threads run encoding and search; ``queue`` more requests may wait for one, and past that
    the server answers 503 with Retry-After instead of queueing without bound. ``where_*`` bound each
    `where` filter (the page's artist/album/genre/year/tag filters are folded into it): its length, the
    seconds DuckDB may run it and its DuckDB memory, in the engine's sandbox (engine.query.filters).
    """

    max_query_chars: int = 2_000
    max_k: int = 100
    max_candidates: int = 2_000
    max_nprobe: int = 65_536
    max_batch: int = 32
    max_upload_bytes: int = 20 * 1024 * 1024
    max_body_bytes: int = 4 * 1024 * 1024  # any other request body (a batch of 32 vectors is < 1 MiB of JSON)
    max_clip_s: float = 60.0
    max_peaks: int = 4_000          # waveform bins per request
    max_peaks_s: float = 4 * 3600.0  # longest track whose waveform is drawn (decoded once, streamed)
    where_chars: int = 2_000
    where_timeout_s: float = 2.0
    where_memory_mb: int = 256
    workers: int = 2
    queue: int = 32
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0:
            raise UsageError(f"workers must be >= 1 and queue >= 0 (got {self.workers}, {self.queue})")
        if not 0 < self.max_clip_s < 1e6:  # also NaN: 0 or less would refuse every clip
            raise UsageError(f"max_clip_s must be a positive number of seconds (got {self.max_clip_s})")
        if self.max_upload_bytes < 1:
            raise UsageError(f"max_upload_bytes must be at least 1 (got {self.max_upload_bytes})")
        self.filter_limits()  # refuses a bad where bound at start, not on the first request

    def body_limit(self, path: str) -> int:
        """The largest request body for ``path``: an upload with room for its multipart headers, else
        ``max_body_bytes``."""
        return self.max_upload_bytes + 64 * 1024 if path.rstrip("/") == "/api/search/audio" else self.max_body_bytes

    def filter_limits(self) -> FilterLimits:
        """The where bounds as the engine takes them (one DuckDB thread per filter: the pool bounds the rest)."""
        # the predicate the server builds is `where` plus the structured filters: leave room for those (each
        # of artist/album/genre/tag a SQL literal of up to twice its length: a quote inside is doubled)
        return FilterLimits(timeout_s=self.where_timeout_s, memory_mb=self.where_memory_mb, threads=1,
                            max_chars=self.where_chars + 8 * self.max_query_chars + 200).validated()


@dataclass(frozen=True)
class ServerConfig:
    """A server's settings. ``token`` None means no token is asked for (loopback only)."""

    library: Path
    host: str = "127.0.0.1"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    device: str = "auto"
    cache_texts: bool = False           # keep query text vectors in the library's text-cache/ across restarts
    transcode_dir: Path | None = None   # None: a folder under the system temp dir
    static_dir: Path | None = None      # None: the page shipped in the package


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None) -> str | None:
    """The access token from ``token_file`` (first line) or the SONGSEEK_TOKEN environment variable."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"token_file {token_file}: cannot read it ({exc})") from exc
        token = text.splitlines()[0].strip() if text else ""
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < 16:
        raise UsageError("the access token is shorter than 16 characters: use a long random one "
                         "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not is_loopback(host) and token is None:
        raise UsageError(f"host {host} is reachable from other machines: give an access token with "
                         f"--token-file FILE or the {TOKEN_ENV} environment variable (or bind 127.0.0.1)")
