"""Alembic environment and versions for the relay schema (run via ``server.db.migrate``)."""
