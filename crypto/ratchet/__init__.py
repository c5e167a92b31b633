"""The Double Ratchet (Signal's specification), one concept per module.

* :mod:`~crypto.ratchet.root_chain` — ``KDF_RK`` (HKDF-SHA256)
* :mod:`~crypto.ratchet.chain_key` — ``KDF_CK`` (HMAC-SHA256, constants 0x01 / 0x02)
* :mod:`~crypto.ratchet.message_keys` — AES-256-GCM key and nonce per message
* :mod:`~crypto.ratchet.header` — the clear, authenticated header
* :mod:`~crypto.ratchet.skipped_keys` — bounded store for out-of-order messages
* :mod:`~crypto.ratchet.session` — the session state machine
"""

# Import the modules directly (``from crypto.ratchet.session import Session``); this
# package deliberately re-exports nothing, so ``crypto.envelope`` can import the header
# module without an import cycle. The public names are exported by ``crypto``.
