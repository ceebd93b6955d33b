"""AESGCM that counts its decryptions: how many keys a sealed value was tried with, so a test of
"every key is tried" needs no timing. Reset ``decrypted`` before counting."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class CountingAESGCM:
    decrypted = 0

    def __init__(self, key: bytes) -> None:
        self.inner = AESGCM(key)

    def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        return self.inner.encrypt(nonce, data, associated)

    def decrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        CountingAESGCM.decrypted += 1
        return self.inner.decrypt(nonce, data, associated)
