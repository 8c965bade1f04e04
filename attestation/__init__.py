"""Remote attestation for Escalade (RATS roles).

The hub is the Attester (Gramine SGX or TDX through DCAP quotes, SEV-SNP reports, or the
INSECURE `SimulatedAttester`); the agent is the Verifier and Relying Party (`appraise` with an
`AppraisalPolicy` -> `Verdict`). Verifiers: `attestation.dcap` (Intel) and `attestation.snp`
(AMD); attesters' interfaces: `attestation.gramine` and `attestation.tsm` (configfs-tsm).
"""

from attestation.binding import report_data
from attestation.evidence import (
    AttestationBundle,
    DcapCollateral,
    DcapEvidence,
    Evidence,
    SimulatedEvidence,
    SnpEvidence,
)
from attestation.policy import (
    AppraisalPolicy,
    Failure,
    PolicyError,
    Status,
    Verdict,
    appraise,
)
from attestation.simulated import SimulatedAttester, code_measurement

__all__ = [
    "AppraisalPolicy",
    "AttestationBundle",
    "DcapCollateral",
    "DcapEvidence",
    "Evidence",
    "Failure",
    "PolicyError",
    "SimulatedAttester",
    "SimulatedEvidence",
    "SnpEvidence",
    "Status",
    "Verdict",
    "appraise",
    "code_measurement",
    "report_data",
]
