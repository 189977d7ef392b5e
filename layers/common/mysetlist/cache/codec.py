"""How a cached value is stored in Valkey: a small binary header, then the JSON payload,
compressed above a threshold and, for sensitive values, encrypted.

``version (1) | flags (1) | stored_at (8) | fresh_until (8) | ttl (8) | len(tags) (2) | tags | payload``

``tags`` is the JSON list ``[[tag, version], ...]`` of the tag versions read before the value
was loaded: a reader compares them with the current versions and ignores a value that an
invalidation overtook. Times are wall-clock seconds (containers compare them).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mysetlist.cache.crypto import Encryptor

FORMAT_VERSION = 1
FLAG_COMPRESSED = 1
FLAG_ENCRYPTED = 2
_HEADER = struct.Struct(">BBdddH")
# zlib level 1: most of the size win on JSON for a fraction of the time of the default level.
COMPRESSION_LEVEL = 1


class CodecError(Exception):
    """A stored value cannot be read (another format, corrupted, or undecryptable)."""


@dataclass(frozen=True)
class Envelope:
    value: Any
    stored_at: float
    fresh_until: float
    ttl: float
    tag_versions: Mapping[str, int]
    flags: int
    size: int  # bytes as stored


def dumps(value: Any) -> bytes:
    """The JSON form of a value (compact; the cache holds JSON-ready values only)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encode(
    key: str,
    payload: bytes,
    *,
    stored_at: float,
    ttl: float,
    tag_versions: Mapping[str, int],
    compress: bool,
    encryptor: Encryptor | None,
) -> bytes:
    """The stored form of ``payload`` (JSON bytes)."""
    flags = 0
    if compress:
        packed = zlib.compress(payload, COMPRESSION_LEVEL)
        if len(packed) < len(payload):
            payload, flags = packed, flags | FLAG_COMPRESSED
    if encryptor is not None:
        payload, flags = encryptor.encrypt(payload, key.encode()), flags | FLAG_ENCRYPTED
    tags = json.dumps(sorted(tag_versions.items()), separators=(",", ":")).encode()
    header = _HEADER.pack(FORMAT_VERSION, flags, stored_at, stored_at + ttl, ttl, len(tags))
    return header + tags + payload


def decode(key: str, blob: bytes, encryptor: Encryptor | None) -> Envelope:
    try:
        version, flags, stored_at, fresh_until, ttl, tags_length = _HEADER.unpack_from(blob)
        if version != FORMAT_VERSION:
            raise CodecError(f"unknown format version {version}")
        start = _HEADER.size
        tags = {str(t): int(v) for t, v in json.loads(blob[start : start + tags_length])}
        payload = blob[start + tags_length :]
        if flags & FLAG_ENCRYPTED:
            if encryptor is None:
                raise CodecError("value is encrypted and no key is configured")
            payload = encryptor.decrypt(payload, key.encode())
        if flags & FLAG_COMPRESSED:
            payload = zlib.decompress(payload)
        value = json.loads(payload)
    except CodecError:
        raise
    except Exception as exc:  # struct, zlib, JSON or decryption errors: the value is unreadable
        raise CodecError(f"{type(exc).__name__}: {exc}") from exc
    return Envelope(value, stored_at, fresh_until, ttl, tags, flags, len(blob))
