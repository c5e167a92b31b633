"""``/v1/config`` and operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from server.deps import MetricsDep, SettingsDep, StateDep
from server.openapi import error_responses
from server.push.service import vapid_out
from wire.rest import BrandOut, ConfigOut, LimitsOut

router = APIRouter(tags=["ops"])
PROTOCOL_VERSION = 1


@router.get("/v1/config")
async def config(settings: SettingsDep, state: StateDep) -> ConfigOut:
    """Brand, registration policy, limits and the Web Push VAPID key (``null`` when push is
    off), for clients to render and respect."""
    push = None if state.push is None else await vapid_out(state.push.vapid)
    return ConfigOut(
        protocol_version=PROTOCOL_VERSION,
        brand=BrandOut(**settings.brand.model_dump()),
        registration=settings.registration.value,
        limits=LimitsOut(**settings.limits.model_dump(exclude={"challenge_ttl_seconds"})),
        push=push,
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness for a load balancer: 200 while this node can serve, 503 when it cannot.

    * ``200 {"status": "ready"}`` — the database and Redis (when configured) answer.
    * ``200 {"status": "degraded"}`` — Redis is unreachable; the node still serves and
      delivers across nodes by polling the database (slower; alert on it, do not pull it).
    * ``503 {"status": "unavailable"}`` — the database does not answer.
    """
    checks: dict[str, Any] = {}
    database_ok = True
    try:
        async with state.sessions() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        database_ok, checks["database"] = False, f"error: {exc.__class__.__name__}"
    degraded = False
    redis = state.redis
    if redis is not None:
        try:
            await asyncio.wait_for(redis.ping(), timeout=2)
            checks["redis"] = "ok"
        except Exception as exc:
            degraded, checks["redis"] = True, f"error: {exc.__class__.__name__}"
        if state.hub.degraded:
            degraded = True
            checks["fanout"] = "polling the database (Redis unreachable)"
    if not database_ok:
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    return JSONResponse({"status": "degraded" if degraded else "ready", "checks": checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(relay_metrics: MetricsDep) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(relay_metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
