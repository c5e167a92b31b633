"""The Vox relay: store-and-forward of opaque ciphertext (never imports ``crypto/``).

Laid out by domain (``docs/architecture.md``); each domain is a package with
``routes.py`` (thin FastAPI routes) → ``service.py`` (the rules) → ``repository.py`` (all
SQL), and speaks the typed protocol of :mod:`wire`:

* ``server.accounts`` — registration, signed device lists (``device_list``: the relay's own
  verifier), look-alike usernames, invites;
* ``server.auth`` — challenge–response, bearer tokens (**``authenticate_token(session,
  token, now=) -> AuthenticatedDevice``** is what the WebSocket layer calls), the expiry sweeper;
* ``server.prekeys`` — uploads, bundles with atomic one-time-key claims;
* ``server.delivery`` — ``/v1/ws``: frames, the group-commit writer, the queue policy,
  fan-out (in-process / Redis);
* ``server.attachments``, ``server.push`` — uploads/downloads, Web Push;
* ``server.ops`` — ``/v1/config``, health, metrics, backups; ``server.web`` — the browser
  client's static files; ``server.edge`` — connection admission below the app and the
  uvicorn configuration.

The core: ``server.app.create_app(settings, clock=)`` (the app factory), ``server.state``
(``RelayState``: what the layers share, typed), ``server.clock`` (the relay's one clock),
``server.cli`` (``vox-relay``, through the services), ``server.settings``, ``server.db``
(base, engine, ORM rows, migrations runner), ``server.errors`` (domain errors and their one
HTTP mapping), ``server.deps`` (``Annotated`` dependencies), ``server.notify``
(``DeviceNotifier``: how services reach a connected device), ``server.metrics``,
``server.logs``, ``server.ratelimit``, ``server.diskguard``, ``server.openapi``.
"""
