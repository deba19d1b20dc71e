"""`lunarseg demo`: the whole pipeline on the built-in synthetic data."""
from __future__ import annotations


def register(sub) -> None:
    """Add the `demo` subcommand."""
