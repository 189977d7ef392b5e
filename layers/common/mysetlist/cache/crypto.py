"""Envelope encryption of sensitive cache values: AES-256-GCM under a data key from KMS.

One data key per container, made by ``GenerateDataKey`` on first use and reused for a bounded
time and number of values (``DATA_KEY_MAX_AGE_SECONDS``, ``DATA_KEY_MAX_USES``: well inside
AES-GCM's limits for random nonces). Each ciphertext carries the wrapped (KMS-encrypted) data
key, so any container can read any value: it asks KMS to unwrap a key it has not seen yet and
keeps the result for the container's life (a few keys at most: they rotate hourly).

The cache key is the associated data: a ciphertext moved to another key fails to decrypt.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from mypy_boto3_kms import KMSClient

NONCE_BYTES = 12
DATA_KEY_MAX_AGE_SECONDS = 3600.0
# 2**32 random nonces per key is NIST's bound; stay three orders of magnitude below it.
DATA_KEY_MAX_USES = 2**22
_UNWRAPPED_KEYS_KEPT = 16


def _aesgcm(key: bytes) -> AESGCM:
    # cryptography is imported with the first sensitive value, not at the function's cold start.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    return AESGCM(key)


class DecryptionError(Exception):
    """A value could not be decrypted (tampered, wrong key, or its data key cannot be unwrapped)."""


class Encryptor(Protocol):
    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes: ...

    def decrypt(self, blob: bytes, associated: bytes) -> bytes: ...


@dataclass
class _DataKey:
    plaintext: bytes
    wrapped: bytes
    created: float
    uses: int = 0


class KmsEnvelope:
    """AES-GCM with data keys from KMS key ``key_id`` (an id, ARN or alias)."""

    def __init__(
        self, kms: Callable[[], KMSClient], key_id: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._clock = clock
        self._lock = threading.Lock()
        self._current: _DataKey | None = None
        self._unwrapped: OrderedDict[bytes, bytes] = OrderedDict()
        self.kms_calls = 0

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        """``len(wrapped) (2 bytes) | wrapped | nonce (12) | ciphertext and tag``."""
        key = self._data_key()
        nonce = os.urandom(NONCE_BYTES)
        sealed = _aesgcm(key.plaintext).encrypt(nonce, plaintext, associated)
        return struct.pack(">H", len(key.wrapped)) + key.wrapped + nonce + sealed

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        try:
            (length,) = struct.unpack_from(">H", blob)
            wrapped = blob[2 : 2 + length]
            nonce = blob[2 + length : 2 + length + NONCE_BYTES]
            sealed = blob[2 + length + NONCE_BYTES :]
            if len(wrapped) != length or len(nonce) != NONCE_BYTES:
                raise DecryptionError("truncated ciphertext")
            return _aesgcm(self._unwrap(wrapped)).decrypt(nonce, sealed, associated)
        except DecryptionError:
            raise
        except Exception as exc:  # InvalidTag, struct errors, KMS failures: all mean "cannot read"
            raise DecryptionError(f"{type(exc).__name__}: {exc}") from exc

    def _data_key(self) -> _DataKey:
        with self._lock:
            key = self._current
            now = self._clock()
            if key is None or now - key.created > DATA_KEY_MAX_AGE_SECONDS or key.uses >= DATA_KEY_MAX_USES:
                made = self._kms().generate_data_key(KeyId=self._key_id, KeySpec="AES_256")
                self.kms_calls += 1
                key = self._current = _DataKey(made["Plaintext"], made["CiphertextBlob"], now)
                self._remember(key.wrapped, key.plaintext)
            key.uses += 1
            return key

    def _unwrap(self, wrapped: bytes) -> bytes:
        with self._lock:
            found = self._unwrapped.get(wrapped)
            if found is not None:
                self._unwrapped.move_to_end(wrapped)
                return found
        plaintext = self._kms().decrypt(CiphertextBlob=wrapped, KeyId=self._key_id)["Plaintext"]
        with self._lock:
            self.kms_calls += 1
            self._remember(wrapped, plaintext)
        return plaintext

    def _remember(self, wrapped: bytes, plaintext: bytes) -> None:
        self._unwrapped[wrapped] = plaintext
        self._unwrapped.move_to_end(wrapped)
        while len(self._unwrapped) > _UNWRAPPED_KEYS_KEPT:
            self._unwrapped.popitem(last=False)
