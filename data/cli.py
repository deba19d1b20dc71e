"""`lunarseg` subcommands of the data layer (registered by lunarseg.cli; heavy imports inside handlers)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
