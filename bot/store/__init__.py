"""Persistence: one database is the truth (SQLAlchemy 2 + Alembic)."""
