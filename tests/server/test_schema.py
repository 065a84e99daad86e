"""schemathesis against /openapi.json: generated requests to every operation never get a 5xx, and every
answer matches the schema (status code documented, body of the documented shape). Bounded examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install '.[dev]')")


# Not positive_data_acceptance: a schema-valid request can still be refused with a 4xx by design (a `where`
# predicate that is not valid SQL, k past the server's limit, a clip that is not audio).
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]


@pytest.fixture(scope="module")
def app(library: Path) -> object:
    from songseek.server import Limits, ServerConfig, create_app

    return create_app(ServerConfig(library=library, limits=Limits(max_upload_bytes=200_000, max_clip_s=10)))


@pytest.fixture(scope="module")
def api_schema(app: object) -> object:
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1"})


def test_no_server_errors_and_schema_conformant(api_schema: object) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[attr-defined]
    assert len(operations) >= 7
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: object) -> None:
            # a server without a token answers loopback names only (schemathesis sends Host: testserver)
            case.call_and_validate(checks=CHECKS, base_url="http://127.0.0.1")  # type: ignore[attr-defined]

        check()
