"""Support for the content tests over the fake relay harness (imported by test modules)."""

from __future__ import annotations

from clients.sdk import message_rules
from clients.sdk.content import (
    Content,
    DeleteContent,
    EditContent,
    ReactionContent,
    TextContent,
    TimerContent,
)
from clients.sdk.engine import Answer, send_frame
from clients.sdk.sendqueue import Accepted, classify
from tests.clients.fake_relay import Device


def send(device: Device, to: str, content: Content) -> None:
    """Encrypt ``content`` for ``to`` (and our other devices) and hand it to the relay."""
    device.ensure_sessions({to, device.proto.username})
    if isinstance(content, TextContent):
        device.proto.record_outgoing(to, content)
    answer = device.relay.handle(
        device.address, send_frame(device.proto.encode_direct(to, content))
    )
    assert answer is not None
    routed = device.engine.route(answer, receiving=True)
    assert isinstance(routed, Answer)
    assert isinstance(classify(routed.frame, {to}, 0), Accepted)
    if isinstance(content, EditContent | DeleteContent | ReactionContent | TimerContent):
        # what clients.sdk.message_ops does once the relay accepted an operation
        address = device.proto.identity.address
        message_rules.apply(device.proto.store, to, address, content, 0.0, own=address.username)
