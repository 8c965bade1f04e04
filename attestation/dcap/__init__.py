"""Offline Intel DCAP quote verification (SGX v3/v4/v5, TDX v4/v5), pure Python + pyca.

Layout, one concern per module:

- ``quote.py``       quote layouts (Intel's field names as offset constants) and `parse_quote`
- ``certs.py``       pinned Intel SGX Root CA, strict PEM chains, chain/CRL checks, the PCK
                     certificate's SGX extension (FMSPC, PCE-ID, TCB components, PCESVN)
- ``der.py``         the minimal DER reader the SGX extension needs
- ``tcb.py``         TCB info / QE identity JSON and Intel's TCB level matching & convergence
- ``collateral.py``  `Collateral` (raw fields) and `PreparedCollateral` (parsed, pre-checked)
- ``verify.py``      `verify_quote` orchestration and `DcapVerdict`
- ``errors.py``      exceptions and `CheckFailure`

`verify_quote` takes "now" as an input, trusts only the pinned root (or one passed in), never
fetches anything, and never raises for bad evidence: it runs every check the data allows and
lists each failure under a stable name:

quote_format          the bytes are not a supported quote (nothing else is checked on the quote)
qe_vendor             QE vendor ID is not Intel's
quote_signature       ECDSA P-256 over header+body with the attestation key
qe_report_binding     QE report data != SHA-256(attestation key || QE auth data) || zeros
qe_report_signature   QE report not signed by the PCK certificate's key
pck_chain             PCK chain unparsable (strict PEM), a link's signature/CA flag/path
                      length, or a root other than the pinned one
pck_chain_expired     a PCK chain certificate outside its validity window at `now`
pck_extension         SGX extension missing or malformed in the PCK certificate
root_ca_crl           root CA CRL not issued/signed by the root
pck_crl               PCK CRL not issued/signed by the quote's PCK CA (or its issuer chain bad)
crl_expired           a CRL (or the PCK CRL issuer chain) outside its validity at `now`
pck_ca_revoked        the PCK CA is on the root CA CRL
pck_revoked           the PCK certificate is on the PCK CRL
tcb_info_signature    TCB info signature (raw r||s over the exact JSON text)
tcb_info_chain        TCB signing chain: link signature, wrong root, revoked by the root CRL
tcb_info_expired      now outside issueDate..nextUpdate, or the signing chain expired
tcb_info_mismatch     TCB info is for another TEE (SGX vs TDX)
fmspc_mismatch        PCK FMSPC != TCB info FMSPC
pceid_mismatch        PCK PCE-ID != TCB info PCE-ID
tcb_level_not_found   platform (or TDX module, or QE) SVNs below every listed level
tdx_module_mismatch   no TDX module identity, or MRSIGNERSEAM/SEAMATTRIBUTES differ
qe_identity_signature, qe_identity_chain, qe_identity_expired    as for TCB info
qe_identity_mismatch  QE MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES or identity id differ
collateral_format     a CRL or JSON document in the collateral does not parse
verification_error    an unexpected exception inside a check (a bug; reported, never raised)

``DcapVerdict.crypto_ok`` is true only when nothing failed; ``collateral_expired`` flags the
freshness failures. Judging the enclave's measurements, debug flag and the acceptable TCB
statuses is policy, left to the caller.
"""

from attestation.dcap.certs import PckExtensions, load_intel_root_ca, parse_pck_extensions
from attestation.dcap.collateral import Collateral, PreparedCollateral, prepare_collateral
from attestation.dcap.errors import CheckFailure, CollateralFormatError, QuoteFormatError
from attestation.dcap.quote import EnclaveReport, Quote, TdReport, parse_quote
from attestation.dcap.verify import DcapVerdict, verify_quote

__all__ = [
    "CheckFailure",
    "Collateral",
    "CollateralFormatError",
    "DcapVerdict",
    "EnclaveReport",
    "PckExtensions",
    "PreparedCollateral",
    "Quote",
    "QuoteFormatError",
    "TdReport",
    "load_intel_root_ca",
    "parse_pck_extensions",
    "parse_quote",
    "prepare_collateral",
    "verify_quote",
]
