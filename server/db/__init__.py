"""Relay storage: declarative base, engine/session factory and the ORM models.

* :mod:`server.db.base` — ``Base`` (one ``MetaData`` with a naming convention).
* :mod:`server.db.engine` — :func:`create_engine` (SQLite pragmas, ``BEGIN IMMEDIATE``
  opt-in) and :func:`session_factory`.
* :mod:`server.db.models` — accounts, devices, auth, invites and prekeys.
* ``server.db.models_delivery`` — owned by the delivery side (envelopes, attachments).
* :mod:`server.db.migrate` — run Alembic programmatically.
* :mod:`server.db.raw` — statements straight to the driver (sqlite3, asyncpg) on hot paths.
"""
