"""The Vox relay: store-and-forward of opaque ciphertext (never imports ``crypto/``).

Layout (routes → services → repositories):

* ``server.app.create_app(settings)`` — the app factory; ``server.cli`` — ``vox-relay``.
* ``server.settings`` — typed settings (``load_settings``); ``server.serve`` — uvicorn config.
* ``server.api`` — thin REST routes; ``server.deps`` — ``Annotated`` dependencies
  (``SessionDep``, ``SettingsDep``, ``CurrentDevice``).
* ``server.services`` — rules: ``accounts`` (registration, signed device lists), ``auth``
  (challenge–response, bearer tokens; **``authenticate_token(session, token) ->
  AuthenticatedDevice``** is what the WebSocket layer calls), ``prekeys`` (upload, atomic
  claims), ``maintenance`` (expiry sweeper).
* ``server.repositories`` — all SQL; ``server.db`` — base, engine, models, migrations runner.
* ``server.errors`` — domain errors and their one HTTP mapping.
* ``server.notify`` — ``DeviceNotifier`` (``app.state.notifier``), how core services reach a
  connected device; ``server.metrics`` — per-app Prometheus registry.
* ``server.delivery``, ``server.fanout``, ``server.attachments`` — the WebSocket delivery
  path, fan-out (in-process / Redis) and attachments.
"""
