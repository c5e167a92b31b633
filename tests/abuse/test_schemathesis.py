"""Finding 10: schemathesis against a real relay process on loopback, with and without a
bearer token, valid and invalid inputs: no 5xx, every status and body as the OpenAPI
document says, and invalid input always refused.

Bounded and seeded: per operation and generation mode, ``EXAMPLES`` cases with a token and
half as many without (about 600 requests in all, ~90 s on a 2-core machine at load 10),
Hypothesis derandomized, no example database. ``VOX_SCHEMATHESIS_EXAMPLES=60`` makes it
a run of a few thousand cases (e.g. on a dedicated CI runner).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.server.relay_harness import TestAccount, auth_header, free_port, relay_process

EXAMPLES = int(os.environ.get("VOX_SCHEMATHESIS_EXAMPLES", "12"))

CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]


def _run(
    operation: Any,
    mode: GenerationMode,
    checks: list[Callable[..., Any]],
    base_url: str,
    headers: dict[str, str],
    examples: int,
) -> int:
    """``examples`` seeded cases of one operation in one generation mode; how many ran."""
    ran = 0

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): nothing to test negatively.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return ran


def _fuzz(schema_doc: dict[str, Any], base_url: str, headers: dict[str, str], examples: int) -> int:
    """Run every operation in both generation modes; return how many cases ran."""
    schema = schemathesis.openapi.from_dict(schema_doc)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    # Logging out revokes the token the other operations use: last.
    operations.sort(key=lambda op: op.label == "DELETE /v1/auth/token")
    ran = 0
    for operation in operations:
        checks = CHECKS
        if operation.label == "POST /v1/attachments":
            # An opaque octet stream: no byte string is "schema-violating".
            checks = [c for c in CHECKS if c is not negative_data_rejection]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            ran += _run(operation, mode, checks, base_url, headers, examples)
    return ran


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "VOX_DATA_DIR": str(tmp_path / "vox-data"),
        "VOX_LOG_LEVEL": "warning",
        "VOX_LIMITS__REQUESTS_PER_MINUTE_PER_IP": "1000000",
    }
    async with relay_process(
        ["serve", "--port", str(port)], env=env, port=port, startup_timeout=120
    ):
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            token = await TestAccount.new("alice").register_and_login(http)
            schema_doc = (await http.get("/openapi.json")).json()
        signed_in = await asyncio.to_thread(
            _fuzz, schema_doc, base_url, auth_header(token), EXAMPLES
        )
        anonymous = await asyncio.to_thread(_fuzz, schema_doc, base_url, {}, EXAMPLES // 2)
    operations = sum(len(ops) for ops in schema_doc["paths"].values())
    assert signed_in + anonymous >= operations * EXAMPLES * 2, (signed_in, anonymous)
