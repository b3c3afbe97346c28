"""usergraph.auth.data_keys (encryption at rest of TOTP secrets) and the settings that feed it:
USERGRAPH_DATA_KEYS, and the development key file used without it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from tests.environment import TEST_SIGNING_KEY
from usergraph.auth.data_keys import DataCipher, UndecryptableValue, new_data_key
from usergraph.runtime import data_cipher
from usergraph.settings import Settings

KEY_A = new_data_key()
KEY_B = new_data_key()
KEY_C = new_data_key()
PLAINTEXT = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
BAD_KEY_MESSAGE = "a data key is 32 random bytes in url-safe base64"


def test_new_data_keys_are_fernet_keys() -> None:
    assert len(KEY_A) == 44
    assert len(base64.urlsafe_b64decode(KEY_A)) == 32
    assert len({new_data_key() for _ in range(20)}) == 20
    Fernet(KEY_A.encode())  # accepted as a key


def test_round_trip() -> None:
    cipher = DataCipher([KEY_A])
    for plaintext in (PLAINTEXT, "", "ünïcode ✓", "x" * 1000):
        assert cipher.decrypt(cipher.encrypt(plaintext)) == plaintext


def test_ciphertext_hides_the_plaintext() -> None:
    cipher = DataCipher([KEY_A])
    ciphertext = cipher.encrypt(PLAINTEXT)
    assert PLAINTEXT not in ciphertext
    assert PLAINTEXT.lower() not in ciphertext.lower()
    assert base64.b32decode(PLAINTEXT) not in base64.urlsafe_b64decode(ciphertext)
    assert KEY_A not in ciphertext
    # Encrypting twice gives two ciphertexts (a fresh IV each time).
    assert cipher.encrypt(PLAINTEXT) != ciphertext


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    both = DataCipher([KEY_A, KEY_B])
    ciphertext = both.encrypt(PLAINTEXT)
    assert DataCipher([KEY_A]).decrypt(ciphertext) == PLAINTEXT
    assert both.decrypt(ciphertext) == PLAINTEXT
    with pytest.raises(UndecryptableValue):
        DataCipher([KEY_B]).decrypt(ciphertext)


def test_a_value_of_the_second_key_decrypts_and_rotates_to_the_first() -> None:
    old = DataCipher([KEY_B]).encrypt(PLAINTEXT)
    both = DataCipher([KEY_A, KEY_B])
    assert both.decrypt(old) == PLAINTEXT
    with pytest.raises(UndecryptableValue):
        DataCipher([KEY_A]).decrypt(old)
    rotated = both.rotate(old)
    assert rotated != old
    assert DataCipher([KEY_A]).decrypt(rotated) == PLAINTEXT
    with pytest.raises(UndecryptableValue):
        DataCipher([KEY_B]).decrypt(rotated)
    # Rotating what the first key encrypted keeps it readable by the first key.
    assert DataCipher([KEY_A]).decrypt(both.rotate(rotated)) == PLAINTEXT


def test_a_cipher_without_the_key_raises_undecryptable() -> None:
    ciphertext = DataCipher([KEY_A]).encrypt(PLAINTEXT)
    stranger = DataCipher([KEY_B, KEY_C])
    with pytest.raises(UndecryptableValue):
        stranger.decrypt(ciphertext)
    with pytest.raises(UndecryptableValue):
        stranger.rotate(ciphertext)


def flipped(ciphertext: str, index: int) -> str:
    """The ciphertext with one byte of its token changed."""
    raw = bytearray(base64.urlsafe_b64decode(ciphertext))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(0, id="version"),
        pytest.param(5, id="timestamp"),
        pytest.param(12, id="iv"),
        pytest.param(30, id="body"),
        pytest.param(-1, id="hmac"),
    ],
)
def test_tampered_ciphertext_raises(index: int) -> None:
    cipher = DataCipher([KEY_A, KEY_B])
    ciphertext = cipher.encrypt(PLAINTEXT)
    tampered = flipped(ciphertext, index)
    with pytest.raises(UndecryptableValue):
        cipher.decrypt(tampered)
    with pytest.raises(UndecryptableValue):
        cipher.rotate(tampered)


@pytest.mark.parametrize(
    "garbage",
    ["", "not a token", "gAAAAA", PLAINTEXT, "é" * 10],
    ids=["empty", "words", "stub", "plain", "unicode"],
)
def test_garbage_raises_undecryptable(garbage: str) -> None:
    with pytest.raises(UndecryptableValue):
        DataCipher([KEY_A]).decrypt(garbage)


def test_no_keys_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one data key"):
        DataCipher([])


def test_repr_shows_no_key() -> None:
    cipher = DataCipher([KEY_A, KEY_B])
    for text in (repr(cipher), str(cipher)):
        assert KEY_A not in text and KEY_B not in text
        assert KEY_A[:8] not in text and KEY_B[:8] not in text


# --- settings --------------------------------------------------------------------------------


def test_data_keys_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f" {KEY_B} , {KEY_A},")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [key.get_secret_value() for key in settings.data_keys] == [KEY_B, KEY_A]
    assert KEY_A not in repr(settings) and KEY_B not in repr(settings)
    # The cipher the app builds encrypts with the first, decrypts with both.
    cipher = data_cipher(settings)
    ciphertext = cipher.encrypt(PLAINTEXT)
    assert DataCipher([KEY_B]).decrypt(ciphertext) == PLAINTEXT
    assert cipher.decrypt(DataCipher([KEY_A]).encrypt(PLAINTEXT)) == PLAINTEXT


def test_one_data_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", KEY_A)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [key.get_secret_value() for key in settings.data_keys] == [KEY_A]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("short", id="short"),
        pytest.param(KEY_A[:-4], id="truncated"),
        pytest.param(base64.urlsafe_b64encode(b"k" * 16).decode(), id="16-bytes"),
        pytest.param(base64.urlsafe_b64encode(b"k" * 33).decode(), id="33-bytes"),
        pytest.param("!" * 44, id="not-base64"),
        pytest.param(TEST_SIGNING_KEY, id="a-signing-key"),
    ],
)
def test_an_invalid_data_key_is_refused_clearly(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f"{KEY_A},{bad}")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    [error] = refused.value.errors()
    assert error["loc"] == ("data_keys",)
    assert BAD_KEY_MESSAGE in error["msg"]
    assert "usergraph new-data-key" in error["msg"]
    # The message says what is wrong without repeating the keys.
    assert KEY_A not in error["msg"] and bad not in error["msg"]


def test_an_invalid_data_key_error_does_not_show_the_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    almost = KEY_B[:-4] + "AAA="  # a key with a typo is still mostly a secret
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f"{KEY_A},short")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    text = str(refused.value)
    assert BAD_KEY_MESSAGE in text
    assert KEY_A[:16] not in text and KEY_A[-12:] not in text
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f"{almost}x")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert almost[:16] not in str(refused.value)


def test_production_refuses_to_start_without_data_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", TEST_SIGNING_KEY)
    monkeypatch.setenv("USERGRAPH_MAILER", "smtp")
    monkeypatch.delenv("USERGRAPH_DATA_KEYS", raising=False)
    with pytest.raises(ValidationError, match="USERGRAPH_DATA_KEYS is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", " , ")  # nothing but separators is none
    with pytest.raises(ValidationError, match="USERGRAPH_DATA_KEYS is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", KEY_A)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.is_production
    assert [key.get_secret_value() for key in settings.data_keys] == [KEY_A]


def test_development_keeps_a_generated_key_in_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "data-key"
    settings = Settings(_env_file=None, data_keys_file=key_file)  # type: ignore[call-arg]
    assert settings.data_keys == []
    ciphertext = data_cipher(settings).encrypt(PLAINTEXT)
    # The file holds the key, so the next start (or another worker) decrypts it.
    key = key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert DataCipher([key]).decrypt(ciphertext) == PLAINTEXT
    assert data_cipher(settings).decrypt(ciphertext) == PLAINTEXT
    # Keys in the settings win over the file.
    configured = Settings(  # type: ignore[call-arg]
        _env_file=None, data_keys=[SecretStr(KEY_A)], data_keys_file=key_file
    )
    with pytest.raises(UndecryptableValue):
        data_cipher(configured).decrypt(ciphertext)
