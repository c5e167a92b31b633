"""``/v1/push``: the VAPID public key and a device's push subscriptions (docs/protocol-relay.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from server.deps import ClockDep, CurrentDevice, SessionDep, SettingsDep, StateDep
from server.errors import NotFound
from server.openapi import error_responses
from server.push import service
from server.push.models import PushSubscription
from server.push.sender import PushDispatcher
from wire.rest import SubscriptionIn, SubscriptionList, SubscriptionOut, VapidOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/push", tags=["push"])


async def _dispatcher(state: StateDep) -> PushDispatcher:
    dispatcher = state.push
    if dispatcher is None:
        raise NotFound("push notifications are turned off on this relay", code="push_disabled")
    return dispatcher


PushDep = Annotated[PushDispatcher, Depends(_dispatcher)]


def _out(row: PushSubscription) -> SubscriptionOut:
    return SubscriptionOut(id=row.id, endpoint=row.endpoint, created_at=row.created_at)


@router.get("/vapid", response_model=VapidOut)
async def vapid_key(push: PushDep) -> VapidOut:
    """The relay's VAPID public key (``applicationServerKey``), base64url without padding."""
    return await service.vapid_out(push.vapid)


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    responses={
        200: {"model": SubscriptionOut, "description": "already registered"},
        **error_responses(400, 409),
    },
)
async def register_subscription(
    body: SubscriptionIn,
    me: CurrentDevice,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    clock: ClockDep,
    _: PushDep,
) -> SubscriptionOut:
    """Register (or refresh the keys of) a push subscription of the calling device."""
    new = service.NewSubscription.parse(
        body.endpoint,
        body.keys.p256dh,
        body.keys.auth,
        allow_loopback=settings.push.allow_loopback_endpoints,
    )
    row, created = await service.register(
        session,
        me.device_pk,
        new,
        max_per_device=settings.push.max_subscriptions_per_device,
        now_ms=clock.now_ms(),
    )
    if not created:
        response.status_code = 200
    return _out(row)


@router.get("/subscriptions", response_model=SubscriptionList)
async def list_subscriptions(
    me: CurrentDevice, session: SessionDep, _: PushDep
) -> SubscriptionList:
    """The calling device's subscriptions, oldest first."""
    rows = await service.list_subscriptions(session, me.device_pk)
    return SubscriptionList(subscriptions=[_out(r) for r in rows])


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(
    subscription_id: str, me: CurrentDevice, session: SessionDep, _: PushDep
) -> Response:
    """Remove one of the calling device's subscriptions."""
    await service.delete_subscription(session, me.device_pk, subscription_id)
    return Response(status_code=204)


@router.delete("/subscriptions", status_code=204)
async def delete_all_subscriptions(me: CurrentDevice, session: SessionDep, _: PushDep) -> Response:
    """Remove every subscription of the calling device (e.g. on logout)."""
    await service.delete_all(session, me.device_pk)
    return Response(status_code=204)
