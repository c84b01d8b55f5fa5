"""LOGIN proof (docs/protocol.md §5.1)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.gp8 import NONCE_SIZE, Model, login_proof, mqtt_password, verify_login_proof

SECRET = "s3cret-for-box-0042"
NONCE = bytes(range(16))
IMEI = "356938035643809"


def test_proof_is_hmac_sha256_over_the_documented_message() -> None:
    message = b"GP8v1-LOGIN" + NONCE + (356938035643809).to_bytes(8, "big") + b"\x02"
    expected = hmac.new(SECRET.encode("utf-8"), message, hashlib.sha256).digest()
    assert login_proof(SECRET, NONCE, IMEI, Model.GP8500) == expected
    assert len(expected) == 32
    assert NONCE_SIZE == 16


def test_the_secret_is_used_as_utf8_text_not_hex() -> None:
    secret = "00ff"
    as_text = login_proof(secret, NONCE, IMEI, Model.GP8000)
    message = b"GP8v1-LOGIN" + NONCE + int(IMEI).to_bytes(8, "big") + b"\x01"
    assert as_text == hmac.new(b"00ff", message, hashlib.sha256).digest()
    assert as_text != hmac.new(bytes.fromhex(secret), message, hashlib.sha256).digest()


def test_a_correct_proof_verifies() -> None:
    proof = login_proof(SECRET, NONCE, IMEI, Model.GP8500)
    assert verify_login_proof(SECRET, NONCE, IMEI, Model.GP8500, proof)


@pytest.mark.parametrize(
    ("secret", "nonce", "imei", "model"),
    [
        ("s3cret-for-box-0043", NONCE, IMEI, Model.GP8500),  # wrong secret
        ("", NONCE, IMEI, Model.GP8500),
        (SECRET, bytes(reversed(NONCE)), IMEI, Model.GP8500),  # another connection's nonce
        (SECRET, NONCE, "356938035643808", Model.GP8500),  # another box
        (SECRET, NONCE, IMEI, Model.GP8000),  # another model
    ],
    ids=["wrong_secret", "empty_secret", "other_nonce", "other_imei", "other_model"],
)
def test_a_proof_for_anything_else_fails(
    secret: str, nonce: bytes, imei: str, model: Model
) -> None:
    proof = login_proof(SECRET, NONCE, IMEI, Model.GP8500)
    assert not verify_login_proof(secret, nonce, imei, model, proof)


@pytest.mark.parametrize("proof", [b"", b"\x00" * 32, b"\x00" * 31, b"\x00" * 64])
def test_garbage_proofs_fail(proof: bytes) -> None:
    assert not verify_login_proof(SECRET, NONCE, IMEI, Model.GP8500, proof)


def test_truncated_or_extended_proof_fails() -> None:
    proof = login_proof(SECRET, NONCE, IMEI, Model.GP8500)
    assert not verify_login_proof(SECRET, NONCE, IMEI, Model.GP8500, proof[:-1])
    assert not verify_login_proof(SECRET, NONCE, IMEI, Model.GP8500, proof + b"\x00")


@settings(max_examples=200)
@given(
    st.text(min_size=1, max_size=40),
    st.binary(min_size=16, max_size=16),
    st.text(alphabet="0123456789", min_size=15, max_size=15),
    st.sampled_from(Model),
    st.integers(0, 32 * 8 - 1),
)
def test_any_single_bit_change_in_the_proof_fails(
    secret: str, nonce: bytes, imei: str, model: Model, bit: int
) -> None:
    proof = bytearray(login_proof(secret, nonce, imei, model))
    assert verify_login_proof(secret, nonce, imei, model, bytes(proof))
    proof[bit // 8] ^= 1 << (bit % 8)
    assert not verify_login_proof(secret, nonce, imei, model, bytes(proof))


def test_mqtt_password_is_derived_from_the_secret() -> None:
    digest = hmac.new(SECRET.encode(), b"GP8v1-MQTT", hashlib.sha256).digest()
    password = mqtt_password(SECRET)
    assert base64.urlsafe_b64decode(password + "=") == digest
    assert len(password) == 43 and "=" not in password
    assert mqtt_password("another secret") != password
