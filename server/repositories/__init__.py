"""Repositories: the only place with SQL. Functions take an ``AsyncSession`` and plain values."""
