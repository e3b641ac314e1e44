"""Shared pytest setup: the repository root is importable (see pyproject's pythonpath)."""
