"""``/v1/auth``: challenge, token, logout."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from server.deps import CurrentDevice, MetricsDep, SessionDep, SettingsDep
from server.errors import DomainError
from server.logs import log_event
from server.schemas import ChallengeIn, ChallengeOut, TokenIn, TokenOut
from server.services import auth as service

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/challenge")
async def challenge(body: ChallengeIn, session: SessionDep, settings: SettingsDep) -> ChallengeOut:
    """A one-shot nonce for the device to sign."""
    nonce, expires = await service.create_challenge(
        session, body.username, body.device_id, ttl=settings.limits.challenge_ttl_seconds
    )
    return ChallengeOut(nonce=nonce, expires_at=expires)


@router.post("/token")
async def token(
    body: TokenIn, session: SessionDep, settings: SettingsDep, metrics: MetricsDep
) -> TokenOut:
    """Exchange a signed challenge for a bearer token."""
    try:
        value, expires = await service.issue_token(
            session,
            body.username,
            body.device_id,
            body.nonce,
            body.signature,
            ttl=settings.limits.token_ttl_seconds,
        )
    except DomainError as exc:
        metrics.auth_failures.inc()
        log_event(
            "auth_failed",
            logging.WARNING,
            code=exc.code,
            username=body.username,
            device_id=body.device_id,
        )
        raise
    metrics.tokens_issued.inc()
    return TokenOut(token=value, expires_at=expires, device_id=body.device_id)


@router.delete("/token", status_code=204)
async def logout(me: CurrentDevice, session: SessionDep) -> Response:
    """Revoke the bearer token used for this request."""
    await service.revoke_token(session, me)
    return Response(status_code=204)
