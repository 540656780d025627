"""Metadata storage: SQLAlchemy Core tables, the engine wrapper, and Alembic migrations at start."""
