"""``/v1/auth``: challenge, token, logout."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from server.auth import service
from server.db.onehop import OneHop
from server.deps import (
    ClockDep,
    CurrentDevice,
    LimitersDep,
    MetricsDep,
    NotifierDep,
    SessionDep,
    SettingsDep,
    StateDep,
    client_ip,
)
from server.errors import DomainError
from server.logs import log_event
from server.openapi import error_responses
from wire.rest import ChallengeIn, ChallengeOut, TokenIn, TokenOut

router = APIRouter(prefix="/v1/auth", tags=["auth"])


async def _login_db(state: StateDep) -> OneHop:
    return state.login_db


#: The login transactions' runner (one hand-off per transaction; ``core_lifespan`` opens it).
LoginDbDep = Annotated[OneHop, Depends(_login_db)]


@router.post("/challenge", responses=error_responses(403, 404))
async def challenge(
    body: ChallengeIn,
    request: Request,
    hop: LoginDbDep,
    settings: SettingsDep,
    clock: ClockDep,
    limiters: LimitersDep,
) -> ChallengeOut:
    """A one-shot nonce for the device to sign (bounded per address and per device)."""
    address = client_ip(request)
    await limiters.challenge.acquire(address)
    limits = settings.limits
    nonce, expires = await service.create_challenge(
        hop,
        body.username,
        body.device_id,
        now=clock.now(),
        ttl=limits.challenge_ttl_seconds,
        requester=service.requester_tag(address),
        bounds=service.ChallengeBounds(
            per_device=limits.max_challenges_per_device,
            per_requester=limits.max_challenges_per_address_per_device,
        ),
    )
    return ChallengeOut(nonce=nonce, expires_at=expires)


@router.post("/token", responses=error_responses(401, 403))
async def token(
    body: TokenIn,
    hop: LoginDbDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    clock: ClockDep,
) -> TokenOut:
    """Exchange a signed challenge for a bearer token."""
    try:
        value, expires = await service.issue_token(
            hop,
            body.username,
            body.device_id,
            body.nonce,
            body.signature,
            now=clock.now(),
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
async def logout(
    me: CurrentDevice, session: SessionDep, notifier: NotifierDep, clock: ClockDep
) -> Response:
    """Revoke the bearer token used for this request; close sockets opened with it (4401)."""
    await service.revoke_token(session, me, now=clock.now())
    await notifier.disconnect_token(me.device_pk, me.token_id, "token_revoked")
    return Response(status_code=204)
