"""The proxy's secret: one file, shared by every node and worker that must
understand each other's Contact tokens and Via branches.

Read at start-up (not on the hot path). Keys for different purposes are
derived from the one secret, so the file never needs to change.
"""
from __future__ import annotations

import os
import secrets

__all__ = ["SecretError", "load_or_create"]

SECRET_BYTES = 32


class SecretError(ValueError):
    """The secret file cannot be read, written or understood."""


def load_or_create(path: str) -> bytes:
    """The secret in C{path}; a new random one is written there (mode 0600)
    when the file does not exist yet."""
    try:
        with open(path, "rb") as f:
            return _decode(f.read(), path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SecretError(f"cannot read secret file {path}: {e.strerror}") from None
    secret = secrets.token_bytes(SECRET_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker was quicker: use its secret
        return load_or_create(path)
    except OSError as e:
        raise SecretError(f"cannot create secret file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


def _decode(data: bytes, path: str) -> bytes:
    text = data.strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise SecretError(f"secret file {path} does not hold a hex secret") from None
    if len(secret) < 16:
        raise SecretError(f"secret in {path} is too short ({len(secret)} bytes, want at least 16)")
    return secret
