"""``/v1/config`` and operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from server.deps import SettingsDep
from server.openapi import error_responses
from server.schemas import BrandOut, ConfigOut, LimitsOut

router = APIRouter(tags=["ops"])
PROTOCOL_VERSION = 1


@router.get("/v1/config")
async def config(settings: SettingsDep) -> ConfigOut:
    """Brand, registration policy and limits, for clients to render and respect."""
    return ConfigOut(
        protocol_version=PROTOCOL_VERSION,
        brand=BrandOut(**settings.brand.model_dump()),
        registration=settings.registration.value,
        limits=LimitsOut(**settings.limits.model_dump(exclude={"challenge_ttl_seconds"})),
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database (and Redis, when configured) answer."""
    checks: dict[str, Any] = {}
    ok = True
    try:
        async with request.app.state.sessions() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        ok, checks["database"] = False, f"error: {exc.__class__.__name__}"
    redis = request.app.state.redis
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            ok, checks["redis"] = False, f"error: {exc.__class__.__name__}"
    status = "ready" if ok else "unavailable"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(
        request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
