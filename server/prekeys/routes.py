"""``/v1/prekeys``: upload, count, claim a user's bundle."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from server.deps import (
    ClockDep,
    CurrentDevice,
    LimitersDep,
    MetricsDep,
    NotifierDep,
    SessionDep,
    SettingsDep,
)
from server.openapi import error_responses
from server.prekeys import service
from server.prekeys.service import BundleEntry, ClaimBudget
from wire.encoding import USERNAME_PATTERN, QueryDeviceId
from wire.rest import (
    BundleDevice,
    OneTimePrekeyOut,
    PrekeyBundle,
    PrekeyCounts,
    PrekeyUpload,
    SignedPrekeyOut,
)

router = APIRouter(prefix="/v1/prekeys", tags=["prekeys"])


def _otk(claimed: tuple[int, bytes, bytes] | None) -> OneTimePrekeyOut | None:
    if claimed is None:
        return None
    return OneTimePrekeyOut(key_id=claimed[0], public_key=claimed[1], signature=claimed[2])


def _entry(e: BundleEntry) -> BundleDevice:
    d = e.device
    spk = lr = None
    if d.signed_prekey is not None and d.signed_prekey_signature is not None:
        spk = SignedPrekeyOut(
            key_id=d.signed_prekey_id or 0,
            public_key=d.signed_prekey,
            signature=d.signed_prekey_signature,
        )
    if d.last_resort_key is not None and d.last_resort_signature is not None:
        lr = SignedPrekeyOut(
            key_id=d.last_resort_id or 0,
            public_key=d.last_resort_key,
            signature=d.last_resort_signature,
        )
    return BundleDevice(
        device_id=d.device_id,
        identity_key=d.identity_key,
        signed_prekey=spk,
        last_resort_prekey=lr,
        one_time_prekey=_otk(e.one_time),
        one_time_pq_prekey=_otk(e.one_time_pq),
    )


@router.post("", status_code=204, responses=error_responses(409))
async def upload(
    body: PrekeyUpload, me: CurrentDevice, session: SessionDep, settings: SettingsDep
) -> Response:
    """Store any subset of the device's prekeys (replacing signed ones, adding one-time ones)."""
    await service.upload_prekeys(session, me.device_pk, body, settings.limits)
    return Response(status_code=204)


@router.get("/count")
async def count(me: CurrentDevice, session: SessionDep, settings: SettingsDep) -> PrekeyCounts:
    """How many one-time prekeys the device has left."""
    x, pq = await service.prekey_counts(session, me.device_pk)
    limits = settings.limits
    return PrekeyCounts(
        one_time_prekeys=x,
        one_time_pq_prekeys=pq,
        low_threshold=limits.prekey_low_threshold,
        max_stock=limits.prekey_max_stock,
    )


@router.get("/{username}", responses=error_responses(404, 410))
async def bundle(
    me: CurrentDevice,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    notifier: NotifierDep,
    clock: ClockDep,
    limiters: LimitersDep,
    username: str = Path(pattern=USERNAME_PATTERN),
    device_id: Annotated[QueryDeviceId | None, Query()] = None,
) -> PrekeyBundle:
    """Claim a bundle: one entry per device, each with at most one one-time key of each kind."""
    await limiters.bundle.acquire(me.device_pk)
    limits = settings.limits
    claimed = await service.claim_bundle(
        session,
        username,
        device_id,
        now=clock.now(),
        low_threshold=limits.prekey_low_threshold,
        requester_pk=me.device_pk,
        budget=ClaimBudget(
            per_target=limits.prekey_claims_per_hour_per_target,
            per_requester=limits.prekey_claims_per_hour_per_requester,
        ),
    )
    for e in claimed.entries:
        if e.withheld:
            metrics.prekeys_withheld.inc()
            continue
        for kind, got in (("x25519", e.one_time), ("mlkem", e.one_time_pq)):
            (metrics.prekeys_claimed if got else metrics.prekeys_exhausted).labels(kind).inc()
    for low in claimed.low_stock:
        await notifier.notify(
            low.device_pk,
            {
                "type": "prekeys_low",
                "one_time_prekeys": low.one_time_prekeys,
                "one_time_pq_prekeys": low.one_time_pq_prekeys,
            },
        )
    for drained in claimed.drained:
        metrics.prekeys_drained.inc()
        await notifier.notify(
            drained.device_pk,
            {
                "type": "prekeys_drain",
                "claims": drained.claims,
                "window_seconds": drained.window_seconds,
            },
        )
    return PrekeyBundle(
        username=claimed.account.username,
        account_key=claimed.account.account_key,
        device_list=claimed.account.device_list,
        devices=[_entry(e) for e in claimed.entries],
    )
