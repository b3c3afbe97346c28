"""Encryption at rest (of TOTP secrets): the only cryptography import.

USERGRAPH_DATA_KEYS holds one or more Fernet keys (AES-128-CBC with HMAC-SHA256, from the
cryptography package); the first encrypts, every one decrypts, so a new key goes first and
`usergraph rotate-data-key` re-encrypts the stored values with it before old keys are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class UndecryptableValue(Exception):
    """No configured data key decrypts the value (a key was dropped too early, or tampering)."""


def new_data_key() -> str:
    return Fernet.generate_key().decode()


class DataCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one data key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise UndecryptableValue("no data key decrypts this value") from None

    def rotate(self, ciphertext: str) -> str:
        """The value encrypted again with the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise UndecryptableValue("no data key decrypts this value") from None

    def __repr__(self) -> str:
        return "DataCipher(...)"
