"""``/v1/accounts``: register, list devices, replace the signed device list, delete."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request

from server.accounts import service
from server.db.models import Account, Device
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
from server.logs import log_event
from server.openapi import error_responses
from wire.encoding import USERNAME_PATTERN
from wire.rest import (
    AccountDeleteIn,
    AccountDevices,
    DeviceListIn,
    DeviceOut,
    RegisterIn,
    RegisterOut,
)

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
UsernamePath = Path(pattern=USERNAME_PATTERN)


def _devices_out(account: Account, devices: list[Device]) -> AccountDevices:
    return AccountDevices(
        username=account.username,
        account_key=account.account_key,
        device_list=account.device_list,
        device_list_version=account.device_list_version,
        devices=[
            DeviceOut(device_id=d.device_id, identity_key=d.identity_key, auth_key=d.auth_key)
            for d in devices
        ],
    )


@router.post("", status_code=201, responses=error_responses(403, 409))
async def register(
    request: Request,
    body: RegisterIn,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    clock: ClockDep,
    limiters: LimitersDep,
) -> RegisterOut:
    """Create an account with its first device and prekeys."""
    await limiters.registration.acquire(client_ip(request))
    device = await service.register(session, settings, body, now=clock.now())
    metrics.accounts_registered.inc()
    log_event("account_registered", username=body.username, device_id=device.device_id)
    return RegisterOut(username=body.username, device_id=device.device_id, device_list_version=1)


@router.delete("/me", status_code=204, responses=error_responses(403))
async def delete_me(
    body: AccountDeleteIn,
    me: CurrentDevice,
    session: SessionDep,
    state: StateDep,
) -> None:
    """Delete the caller's whole account (signed by the account key); its name is quarantined."""
    deleted = await service.delete_account(
        session,
        state.settings,
        me.username,
        now=state.clock.now(),
        signature=body.signature,
        account_id=me.account_id,
    )
    await service.finish_deletion(deleted, state.notifier, state.attachments.store)
    log_event("account_deleted", username=me.username, by="owner", devices=len(deleted.device_pks))


@router.get("/{username}/devices", responses=error_responses(404, 410))
async def get_devices(
    _: CurrentDevice, session: SessionDep, username: str = UsernamePath
) -> AccountDevices:
    """A user's account key, signed device list and devices."""
    account, devices = await service.account_devices(session, username)
    return _devices_out(account, devices)


@router.put("/{username}/devices", responses=error_responses(403, 404, 409))
async def put_devices(
    body: DeviceListIn,
    me: CurrentDevice,
    session: SessionDep,
    notifier: NotifierDep,
    clock: ClockDep,
    username: str = UsernamePath,
) -> AccountDevices:
    """Replace the signed device list (strictly newer version, signed by the account key)."""
    update = await service.update_device_list(
        session, me.account_id, username, body.device_list, now=clock.now()
    )
    for pk in update.removed_device_pks:
        await notifier.disconnect(pk, "device removed from the account's device list")
    log_event(
        "device_list_updated",
        username=username,
        version=update.account.device_list_version,
        removed=len(update.removed_device_pks),
    )
    return _devices_out(update.account, update.devices)
