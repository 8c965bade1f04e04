"""The wire format: canonical encodings, round trips, and tamper rejection."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from hypothesis import given
from hypothesis import strategies as st

from escalade_protocol import envelope
from escalade_protocol.answer import Answer, sign_answer, verify_answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.hub_keys import HybridKey, load_hub_public
from escalade_protocol.keys import Ed25519PrivateKey, X25519PrivateKey, hub_key_id, public_bytes
from escalade_protocol.provenance import Revealed, open_reveal, seal_reveal
from escalade_protocol.tensor import Tensor

headers = st.builds(
    envelope.EnvelopeHeader,
    device_id=st.uuids(),
    model_id=st.text(max_size=40),
    model_version=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**64 - 1),
    timestamp_ms=st.integers(0, 2**64 - 1),
    nonce=st.binary(min_size=16, max_size=16),
    hub_key_id=st.binary(min_size=16, max_size=16),
)

tensors = st.builds(
    lambda dtype, values: Tensor.from_numpy(np.asarray(values, dtype=dtype)),
    st.sampled_from(["float32", "float16"]),
    st.lists(st.floats(width=16, allow_nan=False), max_size=64),
)

DEVICE_KEY = Ed25519PrivateKey.generate()
HUB_KEY = X25519PrivateKey.generate()


def make_header(**changes: object) -> envelope.EnvelopeHeader:
    values: dict[str, object] = {
        "device_id": uuid.uuid4(),
        "model_id": "digits-pca32",
        "model_version": 1,
        "seq": 7,
        "timestamp_ms": 1_790_000_000_000,
        "nonce": b"n" * 16,
        "hub_key_id": b"k" * 16,
    }
    values.update(changes)
    return envelope.EnvelopeHeader(**values)  # type: ignore[arg-type]


@given(headers)
def test_header_round_trip(header: envelope.EnvelopeHeader) -> None:
    assert envelope.EnvelopeHeader.decode(header.encode()) == header


@given(tensors)
def test_tensor_round_trip(tensor: Tensor) -> None:
    decoded = Tensor.decode(tensor.encode())
    assert decoded == tensor
    np.testing.assert_array_equal(decoded.to_numpy(), tensor.to_numpy())


@given(headers, tensors)
def test_seal_open_round_trip(header: envelope.EnvelopeHeader, tensor: Tensor) -> None:
    sealed = envelope.seal(header, tensor, device_key=DEVICE_KEY, hub_key=HUB_KEY.public_key())
    parsed = envelope.parse(sealed)
    assert parsed.header == header
    parsed.verify_signature(DEVICE_KEY.public_key())
    assert parsed.open_payload(HUB_KEY) == envelope.EscalationPayload(tensor)


@given(headers.map(lambda h: dataclasses.replace(h, suite=envelope.HpkeSuiteId.MLKEM768_X25519)))
def test_header_round_trip_names_the_suite(header: envelope.EnvelopeHeader) -> None:
    decoded = envelope.EnvelopeHeader.decode(header.encode())
    assert decoded.suite is envelope.HpkeSuiteId.MLKEM768_X25519
    assert decoded == header


def test_an_unknown_suite_is_refused_with_its_code() -> None:
    data = bytearray(make_header().encode())
    data[-1] = 99  # the suite is the header's last byte
    with pytest.raises(ProtocolError) as caught:
        envelope.EnvelopeHeader.decode(bytes(data))
    assert caught.value.code is ErrorCode.UNSUPPORTED_SUITE


def test_local_probabilities_travel_sealed_with_the_embedding() -> None:
    payload = envelope.EscalationPayload(
        Tensor.from_numpy(np.linspace(-1, 1, 32, dtype=np.float32), "float16"),
        Tensor.from_numpy(np.array([0.7, 0.2, 0.1], dtype=np.float32)),
    )
    sealed = envelope.seal(
        make_header(), payload, device_key=DEVICE_KEY, hub_key=HUB_KEY.public_key()
    )
    assert payload.local_probs is not None
    assert payload.local_probs.data not in sealed  # encrypted, not in the clear header
    assert envelope.parse(sealed).open_payload(HUB_KEY) == payload


def test_hybrid_post_quantum_suite_seals_and_opens() -> None:
    hub_key = hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.generate(), X25519PrivateKey.generate()
    )
    header = make_header(suite=envelope.HpkeSuiteId.MLKEM768_X25519)
    tensor = Tensor.from_numpy(np.ones(8, dtype=np.float32))
    sealed = envelope.seal(header, tensor, device_key=DEVICE_KEY, hub_key=hub_key.public_key())
    parsed = envelope.parse(sealed)
    assert parsed.open_payload(hub_key).embedding == tensor
    # A key of another suite is refused by code, not with a TypeError.
    with pytest.raises(ProtocolError) as caught:
        parsed.open_payload(HUB_KEY)
    assert caught.value.code is ErrorCode.UNSUPPORTED_SUITE


@pytest.mark.parametrize("flags", [2, 3, 255])
def test_unknown_payload_flags_are_malformed(flags: int) -> None:
    encoded = envelope.EscalationPayload(Tensor.from_numpy(np.ones(4, np.float32))).encode()
    with pytest.raises(ProtocolError) as caught:
        envelope.EscalationPayload.decode(bytes([flags]) + encoded[1:])
    assert caught.value.code is ErrorCode.MALFORMED


@given(headers, tensors, st.data())
def test_every_truncation_or_extension_is_malformed(
    header: envelope.EnvelopeHeader, tensor: Tensor, data: st.DataObject
) -> None:
    """The offset-based parser refuses what the reader-based one refused: any cut, any extra."""
    sealed = envelope.seal(header, tensor, device_key=DEVICE_KEY, hub_key=HUB_KEY.public_key())
    cut = data.draw(st.integers(0, len(sealed) - 1))
    extra = data.draw(st.binary(min_size=1, max_size=8))
    for bad in (sealed[:cut], sealed + extra):
        with pytest.raises(ProtocolError) as caught:
            envelope.parse(bad)
        assert caught.value.code is ErrorCode.MALFORMED
    header_bytes = header.encode()
    for bad in (
        header_bytes[: data.draw(st.integers(1, len(header_bytes) - 1))],
        header_bytes + extra,
    ):
        with pytest.raises(ProtocolError) as caught:
            envelope.EnvelopeHeader.decode(bad)
        assert caught.value.code is ErrorCode.MALFORMED


def test_encoding_is_deterministic_for_the_header() -> None:
    header = make_header()
    assert header.encode() == make_header(device_id=header.device_id).encode()


def _open_fully(data: bytes) -> None:
    parsed = envelope.parse(data)
    parsed.verify_signature(DEVICE_KEY.public_key())
    parsed.open_payload(HUB_KEY)


def test_every_flipped_byte_of_a_sealed_envelope_is_rejected() -> None:
    payload = Tensor.from_numpy(np.linspace(-1, 1, 32, dtype=np.float32), "float16")
    sealed = envelope.seal(
        make_header(), payload, device_key=DEVICE_KEY, hub_key=HUB_KEY.public_key()
    )
    _open_fully(sealed)  # the untouched envelope opens
    for position in range(len(sealed)):
        for mask in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[position] ^= mask
            with pytest.raises(ProtocolError):
                _open_fully(bytes(tampered))


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b[:-1], ErrorCode.MALFORMED),
        (lambda b: b + b"\x00", ErrorCode.MALFORMED),
        (lambda b: b"XXXX" + b[4:], ErrorCode.MALFORMED),
        (lambda b: b"", ErrorCode.MALFORMED),
    ],
)
def test_structural_damage_is_malformed(mutate: object, code: ErrorCode) -> None:
    sealed = envelope.seal(
        make_header(),
        Tensor.from_numpy(np.zeros(4, np.float32)),
        device_key=DEVICE_KEY,
        hub_key=HUB_KEY.public_key(),
    )
    with pytest.raises(ProtocolError) as info:
        envelope.parse(mutate(sealed))  # type: ignore[operator]
    assert info.value.code is code


def test_payload_cannot_move_under_another_header() -> None:
    """The header is bound into the HPKE key schedule: re-signing a new header is not enough."""
    payload = Tensor.from_numpy(np.ones(8, np.float32))
    original = envelope.parse(
        envelope.seal(
            make_header(seq=1), payload, device_key=DEVICE_KEY, hub_key=HUB_KEY.public_key()
        )
    )
    forged_header = make_header(seq=2).encode()
    forged = envelope.SealedEnvelope(
        envelope.EnvelopeHeader.decode(forged_header),
        forged_header,
        original.ciphertext,
        DEVICE_KEY.sign(envelope._signed_bytes(forged_header, original.ciphertext)),
    )
    forged.verify_signature(DEVICE_KEY.public_key())
    with pytest.raises(ProtocolError) as info:
        forged.open_payload(HUB_KEY)
    assert info.value.code is ErrorCode.BAD_CIPHERTEXT


def test_unknown_dtype_code_is_refused() -> None:
    encoded = bytearray(Tensor.from_numpy(np.zeros(2, np.float32)).encode())
    encoded[0] = 99
    with pytest.raises(ProtocolError) as info:
        Tensor.decode(bytes(encoded))
    assert info.value.code is ErrorCode.BAD_TENSOR_DTYPE


def test_answer_signature_and_request_binding() -> None:
    hub_signing = Ed25519PrivateKey.generate()
    enc_pub = public_bytes(HUB_KEY.public_key())
    answer = Answer(
        request_digest=b"d" * 32,
        hub_key_id=hub_key_id(enc_pub, public_bytes(hub_signing.public_key())),
        model_id="m",
        model_version=1,
        label=3,
        probabilities=Tensor.from_numpy(np.full(10, 0.1, np.float32)),
        timestamp_ms=5,
    )
    signed = sign_answer(answer, hub_signing)
    assert verify_answer(signed, hub_signing.public_key(), expected_digest=b"d" * 32) == answer
    with pytest.raises(ProtocolError) as info:
        verify_answer(signed, hub_signing.public_key(), expected_digest=b"e" * 32)
    assert info.value.code is ErrorCode.MALFORMED
    with pytest.raises(ProtocolError) as info:
        verify_answer(signed, Ed25519PrivateKey.generate().public_key(), expected_digest=b"d" * 32)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_an_audit_reveal_is_sealed_with_the_suite_of_its_escalation() -> None:
    hybrid = HybridKey.generate()
    public = load_hub_public(envelope.HpkeSuiteId.MLKEM768_X25519, hybrid.public_bytes())
    revealed = Revealed(
        salt=bytes(range(32)), input=Tensor.from_numpy(np.ones(8, np.float32), "float32")
    )
    digest = bytes(32)
    sealed = seal_reveal(
        revealed, public, request_digest=digest, suite=envelope.HpkeSuiteId.MLKEM768_X25519
    )
    opened = open_reveal(
        sealed, hybrid.hpke_key, request_digest=digest, suite=envelope.HpkeSuiteId.MLKEM768_X25519
    )
    assert opened == revealed
    # Opened as the classical suite (with its X25519 half), it does not decrypt.
    with pytest.raises(ProtocolError) as caught:
        open_reveal(sealed, hybrid.classical, request_digest=digest)
    assert caught.value.code is ErrorCode.BAD_CIPHERTEXT
