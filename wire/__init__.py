"""The Vox wire protocol, typed: what the relay and the clients say to each other.

No I/O, no cryptography, no knowledge of either side (only pydantic and the standard
library); ``tests/test_architecture.py`` enforces that. One module per concern:

* :mod:`wire.encoding` — base64 bytes (:data:`~wire.encoding.B64`), username and client-id
  patterns;
* :mod:`wire.rest` — REST request and response bodies (``docs/protocol-relay.md``);
* :mod:`wire.frames` — every ``/v1/ws`` frame, both directions (``docs/protocol-ws.md``);
* :mod:`wire.codes` — REST error codes, WebSocket error codes and close codes as enums.

>>> from wire.frames import SendFrame, PayloadIn, Recipient, encode, parse_server_frame
>>> to = [Recipient(user="bob", device=1)]
>>> encode(SendFrame(id="m1", payloads=[PayloadIn(data="AAE=", to=to)], ephemeral=True))
'{"type":"send","id":"m1","payloads":[{"data":"AAE=","to":[{"user":"bob","device":1}]}],"ephemeral":true}'
>>> parse_server_frame('{"type":"accepted","id":"m1","envelope":"e1","ts":5}').ts
5
"""
