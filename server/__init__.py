"""`songseek serve`: an HTTP shell over the engine (FastAPI + uvicorn) and a static search page.

It sits at the cli layer: it may import engine, indexers and benchmarks; only cli imports it.
"""

from songseek.server.app import create_app
from songseek.server.config import Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app"]
