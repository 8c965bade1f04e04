"""Sealed hub keys: the identity survives a restart only inside the same enclave measurement.

Inside Gramine-SGX the enclave reads its MRENCLAVE-bound sealing key from
``/dev/attestation/keys/_sgx_mrenclave`` (16 bytes, Gramine 1.5+; EGETKEY with the MRENCLAVE
policy). The hub derives its own AES-256-GCM key from it (HKDF-SHA256 with an Escalade label,
so the raw key is never used directly, as Gramine's docs ask) and keeps its private keys in
the data dir as ``hub-identity.sealed``, 0600. A restart of the same enclave on the same CPU
unseals the same keys, so agents keep their verdict; an enclave with another measurement (a new
release, a tampered build) derives another key, cannot open the file, and starts with fresh
keys (logged), so nothing but the measured code ever holds a hub's keys.

TDX and SEV-SNP guests have no sealing key in configfs-tsm (SNP's derived key needs the
/dev/sev-guest ioctl, TDX has none at all), and the simulated TEE has nothing to seal to:
`--seal-keys` is refused there with one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from attestation.gramine import GramineAttester
from cloud_hub.attesters import Attester, DcapAttester
from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError
from cloud_hub.identity import HubIdentity
from escalade_protocol.envelope import HpkeSuiteId
from escalade_protocol.files import write_private

log = logging.getLogger("cloud_hub")

SEALED_IDENTITY_NAME: Final = "hub-identity.sealed"
SGX_SEALING_KEY: Final = Path("keys") / "_sgx_mrenclave"
_MAGIC: Final = b"ESH1"
_LABEL: Final = b"escalade/v1/sealed-hub-identity"
_NONCE_SIZE: Final = 12


class SealingError(HubError):
    pass


class Unsealed(StrEnum):
    """What start-up found: no file yet, keys restored, or a file of another measurement."""

    CREATED = "created"
    RESTORED = "restored"
    REPLACED = "replaced"


def read_sgx_sealing_key(attestation_dir: Path) -> bytes:
    path = attestation_dir / SGX_SEALING_KEY
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise SealingError(
            f"--seal-keys needs Gramine's sealing key at {path} (Gramine 1.5 or later, "
            f"inside SGX): {exc.strerror}"
        ) from None
    if len(key) != 16:
        raise SealingError(f"{path} holds {len(key)} bytes, not a 16-byte SGX sealing key")
    return key


def _aead(sealing_key: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(sealing_key)
    return AESGCM(derived)


def seal(sealing_key: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(_NONCE_SIZE)
    return _MAGIC + nonce + _aead(sealing_key).encrypt(nonce, plaintext, _MAGIC)


def unseal(sealing_key: bytes, blob: bytes) -> bytes | None:
    """The plaintext; None when the blob was sealed by another measurement or was altered."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _NONCE_SIZE + 16:
        return None
    nonce = blob[len(_MAGIC) : len(_MAGIC) + _NONCE_SIZE]
    try:
        return _aead(sealing_key).decrypt(nonce, blob[len(_MAGIC) + _NONCE_SIZE :], _MAGIC)
    except InvalidTag:
        return None


def sealed_identity(
    data_dir: Path, sealing_key: bytes, suites: Iterable[HpkeSuiteId]
) -> tuple[HubIdentity, Unsealed]:
    """The hub's identity from its sealed file, or fresh keys sealed there now."""
    suites = frozenset(suites)
    path = data_dir / SEALED_IDENTITY_NAME
    try:
        blob: bytes | None = path.read_bytes()
    except FileNotFoundError:
        blob = None
    except OSError as exc:
        raise SealingError(f"cannot read {path}: {exc.strerror}") from None
    outcome = Unsealed.CREATED
    if blob is not None:
        plaintext = unseal(sealing_key, blob)
        if plaintext is not None:
            try:
                identity = HubIdentity.from_bytes(plaintext, suites)
            except ValueError as exc:
                raise SealingError(f"{path} unsealed but does not parse: {exc}") from None
            if identity.to_bytes() != plaintext:
                # The offered suites changed (a hybrid key was added or dropped): reseal.
                write_private(path, seal(sealing_key, identity.to_bytes()))
            return identity, Unsealed.RESTORED
        log.warning(
            "%s was sealed by another enclave measurement (or altered): starting with new keys",
            path,
        )
        outcome = Unsealed.REPLACED
    identity = HubIdentity.generate(suites)
    try:
        write_private(path, seal(sealing_key, identity.to_bytes()))
    except OSError as exc:
        raise SealingError(f"cannot write {path}: {exc.strerror}") from None
    return identity, outcome


def hub_identity(config: HubConfig, attester: Attester) -> HubIdentity:
    """This start's identity: sealed to the enclave when asked (`--seal-keys`), else fresh."""
    if not config.seal_keys:
        return HubIdentity.generate(config.hpke_suites)
    in_gramine = isinstance(attester, DcapAttester) and isinstance(attester.source, GramineAttester)
    if not in_gramine:
        raise SealingError(
            "--seal-keys needs an SGX enclave (Gramine): TDX and SEV-SNP guests expose no "
            "sealing key through configfs-tsm, and the simulated TEE has nothing to seal to"
        )
    key = read_sgx_sealing_key(config.attestation_dir)
    identity, outcome = sealed_identity(config.data_dir, key, config.hpke_suites)
    log.info("hub keys %s (sealed to this enclave's MRENCLAVE)", outcome.value)
    return identity
