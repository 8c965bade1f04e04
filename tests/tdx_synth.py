"""SYNTHETIC Intel TDX evidence for tests: TEST KEYS, NOT INTEL'S.

TDX quotes (version 4, TEE type 0x81, a TDX 1.0 TD report, QE report certification data of
type 6 wrapping the PCK chain) signed by the same throwaway PCK hierarchy as the SGX quotes of
`dcap_synth`, and TCB info (id "TDX", version 3, with the TDX module and tdxtcbcomponents) and
a TD_QE identity signed as Intel signs them.
"""

from __future__ import annotations

import hashlib
import json
import struct

from dcap_synth import (
    INTEL_QE_VENDOR_ID,
    QE_ISVSVN,
    QE_MRSIGNER,
    SyntheticPki,
    _raw_public,
    pem_chain,
    raw_signature,
    report_body,
)

TEE_TCB_SVN = bytes([3, 0]) + bytes(14)  # module SVN 3, TDX 1.0 (major version 0)
MR_SIGNER_SEAM = bytes(48)  # Intel's TDX module signer is all zeros
MR_TD = b"\x7d" * 48


def td_body(*, report_data: bytes, mr_td: bytes, debug: bool) -> bytes:
    body = (
        TEE_TCB_SVN
        + b"\x5e" * 48  # MRSEAM
        + MR_SIGNER_SEAM
        + bytes(8)  # SEAMATTRIBUTES
        + struct.pack("<Q", 1 if debug else 0)  # TDATTRIBUTES, bit 0 = DEBUG
        + struct.pack("<Q", 0xE7)  # XFAM
        + mr_td
        + bytes(48 * 3)  # MRCONFIGID, MROWNER, MROWNERCONFIG
        + b"\x11" * 48 * 4  # RTMR0..3
        + report_data.ljust(64, b"\x00")
    )
    assert len(body) == 584
    return body


def tdx_quote(
    pki: SyntheticPki, *, report_data: bytes, mr_td: bytes = MR_TD, debug: bool = False
) -> bytes:
    header = struct.pack("<HHIHH", 4, 2, 0x81, 0, 0) + INTEL_QE_VENDOR_ID + bytes(20)
    body = td_body(report_data=report_data, mr_td=mr_td, debug=debug)
    signature = raw_signature(pki.attestation_key, header + body)
    attestation_key = _raw_public(pki.attestation_key)
    auth_data = bytes(range(32))
    qe_report = report_body(
        mr_enclave=b"\x0e" * 32,
        mr_signer=QE_MRSIGNER,
        isv_prod_id=2,
        isv_svn=QE_ISVSVN,
        report_data=hashlib.sha256(attestation_key + auth_data).digest(),
        attributes_flags=0x11,
    )
    chain = pem_chain(pki.pck, pki.pck_ca, pki.root).encode()
    qe_section = (
        qe_report
        + raw_signature(pki.pck_key, qe_report)
        + struct.pack("<H", len(auth_data))
        + auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    signature_data = (
        signature + attestation_key + struct.pack("<HI", 6, len(qe_section)) + qe_section
    )
    return header + body + struct.pack("<I", len(signature_data)) + signature_data


def tdx_collateral(pki: SyntheticPki) -> dict[str, str]:
    """The SGX collateral of `pki` with TDX TCB info and a TD_QE identity, re-signed."""
    collateral = pki.collateral()
    tcb = json.loads(collateral["tcb_info"])
    for level in tcb["tcbLevels"]:
        level["tcb"]["tdxtcbcomponents"] = [{"svn": svn} for svn in TEE_TCB_SVN]
    tcb.update(
        id="TDX",
        tcbType=0,
        tdxModule={
            "mrsigner": MR_SIGNER_SEAM.hex().upper(),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        tdxModuleIdentities=[],
    )
    qe = json.loads(collateral["qe_identity"])
    qe.update(id="TD_QE", isvprodid=2)
    for name, doc in (("tcb_info", tcb), ("qe_identity", qe)):
        text = json.dumps(doc, separators=(",", ":"))
        collateral[name] = text
        collateral[f"{name}_signature"] = raw_signature(pki.tcb_key, text.encode()).hex()
    return collateral
