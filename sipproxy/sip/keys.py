"""Keys derived from the one shared secret, one per purpose (pure).

Branches, Contact tokens and digest nonces each need a key; deriving them
from one secret means the secret file never changes when a purpose is added,
and a key leaked for one purpose says nothing about the others.
"""
from __future__ import annotations

import hashlib
import hmac

__all__ = ["derive"]


def derive(secret: bytes, purpose: str, size: int = 32) -> bytes:
    """A key for one purpose (HKDF-Expand with SHA-256, RFC 5869)."""
    prk = hmac.new(b"sipproxy", secret, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < size:
        block = hmac.new(prk, block + purpose.encode() + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:size]
