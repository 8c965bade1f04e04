"""The hub inside an SGX enclave: the Gramine manifest and how it is rendered.

See `cloud_hub.enclave.manifest` and docs/enclave.md.
"""

from cloud_hub.enclave.manifest import (
    EnclaveLayout,
    current_layout,
    default_hub_args,
    render_manifest,
    trusted_files,
)

__all__ = [
    "EnclaveLayout",
    "current_layout",
    "default_hub_args",
    "render_manifest",
    "trusted_files",
]
