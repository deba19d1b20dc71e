"""Errors that the command line turns into one line and a non-zero exit code."""
from __future__ import annotations


class LunarsegError(Exception):
    """A failure caused by the user's input or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class ImageError(LunarsegError):
    """An image or mask file that cannot be used (empty, corrupt, wrong kind, too large)."""


class DatasetError(LunarsegError):
    """A dataset root that is missing, empty or inconsistent."""


class ModelFileError(LunarsegError):
    """A model file that is missing, corrupt, or not a lunarseg model."""


class ConfigError(LunarsegError):
    """An option or configuration value outside what is supported."""


class OutputError(LunarsegError):
    """An output file that cannot be written (full disk, no permission, a directory in its place)."""

    exit_code = 4


class GateError(LunarsegError):
    """A measured figure broke a limit (parity, IoU drop, latency)."""

    exit_code = 1


def require_at_least(flag: str, value, least) -> None:
    """The one refusal of a command-line count below its least useful value."""
    if value is not None and value < least:
        raise ConfigError(f"{flag} must be at least {least}, got {value}")


def require_folder_or_absent(path, flag: str = "--out") -> None:
    """The one refusal of an output folder that is a file (it would fail later, deep in a write)."""
    import os

    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} exists and is not a directory")


def unknown_key(kind: str, key: str, valid) -> ConfigError:
    """The error for a registry miss; it lists the valid keys."""
    return ConfigError(f"unknown {kind} {key!r}; valid: {', '.join(sorted(valid))}")


def one_line(exc: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """An exception's message on one line (whitespace collapsed), cut at `limit` characters with '…';
    with its type name first when `with_type` (for messages wrapped from other libraries)."""
    text = " ".join(str(exc).split())
    text = text[:limit] + ("…" if len(text) > limit else "")
    return f"{type(exc).__name__}: {text}" if with_type else text
