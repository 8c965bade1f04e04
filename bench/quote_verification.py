"""Quote verification cost: the shared SGX v3 and TDX v4 quotes, collateral parsed once, and
the shared SEV-SNP reports (v2 VCEK, v3 VLEK) with their certificates already loaded.

Prints milliseconds per `verify_quote` and per full `appraise` (verification + policy), next to
the cost of one bare ECDSA P-256 verification measured in the same run: a DCAP verification
checks at least four such signatures (quote, QE report, and the certificate chain), so the
ratio says how much the rest of the work adds. Target: <= 5 ms per quote on this machine.
For SNP: the p50 of single `verify_report` calls (one ECDSA P-384 report signature plus the
RSA-PSS chain), as a ratio to one bare ECDSA P-384 verification. Target: <= 2 ms.

    PYTHONPATH=. python bench/quote_verification.py [--runs N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation import AppraisalPolicy, DcapCollateral, DcapEvidence, appraise
from attestation.dcap import Collateral, prepare_collateral, verify_quote
from attestation.snp import verify_report
from attestation.snp.certs import load_certificate

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"
NOW = datetime(2025, 7, 1, tzinfo=UTC)
TARGET_MS = 5.0
SNP_TARGET_MS = 2.0
SNP_NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside the sample VLEK's validity
SNP_SAMPLES = {
    "snp_v2_vcek": ("snp_v2_report_vcek.bin", "snp_vcek.der"),
    "snp_v3_vlek": ("snp_v3_report_vlek.bin", "snp_vlek.der"),
}


def per_call_ms(fn: Callable[[], object], runs: int) -> float:
    """Median over 5 batches of the mean time per call, in milliseconds."""
    fn()
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(runs):
            fn()
        batches.append((time.perf_counter() - started) / runs * 1000)
    return statistics.median(batches)


def p50_ms(fn: Callable[[], object], runs: int) -> float:
    """Median of single-call times, in milliseconds."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def snp_results(runs: int) -> tuple[float, dict[str, dict[str, float]]]:
    key = ec.generate_private_key(ec.SECP384R1())
    message = b"r" * 0x2A0
    signature = key.sign(message, ec.ECDSA(hashes.SHA384()))
    public = key.public_key()
    baseline = p50_ms(lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA384())), runs)
    results: dict[str, dict[str, float]] = {}
    for name, (report_file, cert_file) in SNP_SAMPLES.items():
        report = (VECTORS / "snp" / report_file).read_bytes()
        cert = load_certificate((VECTORS / "snp" / cert_file).read_bytes(), cert_file)
        verdict = verify_report(report, now=SNP_NOW, vcek=cert)
        assert verdict.crypto_ok, verdict.failures
        ms = p50_ms(lambda r=report, c=cert: verify_report(r, now=SNP_NOW, vcek=c), runs)
        results[name] = {"verify_p50_ms": ms, "x_p384": ms / baseline}
    return baseline, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    message = b"q" * 432
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    baseline = per_call_ms(
        lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())), args.runs
    )

    results: dict[str, dict[str, float]] = {}
    for name in ("sgx_v3", "tdx_v4"):
        quote = (VECTORS / f"{name}_quote.bin").read_bytes()
        raw = json.loads((VECTORS / f"{name}_collateral.json").read_text())
        prepared = prepare_collateral(Collateral.from_json(raw))
        verdict = verify_quote(quote, now=NOW, collateral=prepared)
        assert verdict.crypto_ok, verdict.failures
        evidence = DcapEvidence(quote=quote, collateral=DcapCollateral.model_validate(raw))
        policy = AppraisalPolicy(require_identity=False)
        results[name] = {
            "verify_ms": per_call_ms(
                lambda q=quote, p=prepared: verify_quote(q, now=NOW, collateral=p), args.runs
            ),
            "verify_no_collateral_ms": per_call_ms(
                lambda q=quote: verify_quote(q, now=NOW), args.runs
            ),
            "appraise_ms": per_call_ms(
                lambda e=evidence, p=policy: appraise(
                    e, expected_report_data=None, policy=p, now=NOW
                ),
                args.runs,
            ),
        }
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()))

    print(f"\nbaseline: one ECDSA P-256 verify = {baseline * 1000:.0f} µs")
    print(f"{'quote':8} {'verify ms':>10} {'x ECDSA':>8} {'appraise ms':>12} {'target':>8}")
    for name, row in results.items():
        ok = "ok" if row["appraise_ms"] <= TARGET_MS else "MISSED"
        print(
            f"{name:8} {row['verify_ms']:10.3f} {row['verify_ms'] / baseline:8.1f} "
            f"{row['appraise_ms']:12.3f} {ok:>8}"
        )

    p384, snp = snp_results(args.runs)
    print(f"\nbaseline: one ECDSA P-384 verify = {p384 * 1000:.0f} µs (p50)")
    print(f"{'report':12} {'p50 ms':>8} {'x P-384':>8} {'target':>8}")
    for name, row in snp.items():
        ok = "ok" if row["verify_p50_ms"] <= SNP_TARGET_MS else "MISSED"
        print(f"{name:12} {row['verify_p50_ms']:8.3f} {row['x_p384']:8.1f} {ok:>8}")
    if args.json:
        figures = {
            "ecdsa_verify_ms": baseline,
            "quotes": results,
            "ecdsa_p384_verify_ms": p384,
            "snp_reports": snp,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
