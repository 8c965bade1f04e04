"""The device's identity: an Ed25519 key (file mode 0600) and the id the hub gave it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edge_agent.errors import NotEnrolledError
from escalade_protocol.files import write_private
from escalade_protocol.keys import Ed25519PrivateKey, public_bytes

KEY_FILE = "device.key"
IDENTITY_FILE = "device.json"


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    device_id: uuid.UUID
    key: Ed25519PrivateKey
    hub_url: str

    @property
    def public_key(self) -> bytes:
        return public_bytes(self.key.public_key())

    def save(self, data_dir: Path) -> None:
        record = {"device_id": str(self.device_id), "hub_url": self.hub_url}
        write_private(data_dir / IDENTITY_FILE, json.dumps(record, indent=2).encode())

    @classmethod
    def load(cls, data_dir: Path) -> DeviceIdentity:
        path = data_dir / IDENTITY_FILE
        if not path.exists():
            raise NotEnrolledError(
                f"device is not enrolled (no {path}); run `edge-agent enroll` first"
            )
        record = json.loads(path.read_text())
        return cls(
            device_id=uuid.UUID(record["device_id"]),
            key=load_or_create_key(data_dir),
            hub_url=str(record["hub_url"]),
        )
