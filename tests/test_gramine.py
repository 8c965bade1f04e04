"""The Gramine attester against a stand-in for ``/dev/attestation``.

`FakeAttestationDir` makes ``quote`` a named pipe served by a thread, so the attester's real
code path (write ``user_report_data``, then open and read ``quote``) runs unchanged: the server
learns that a quote is wanted when the attester opens the pipe, reads the report data the
attester wrote just before, and answers with ``make_quote(report_data)``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fake_gramine import FakeAttestationDir

from attestation.gramine import GramineAttester, GramineError, NoAttestationError

pytestmark = pytest.mark.timeout(10)


def echo_quote(report_data: bytes) -> bytes:
    return b"QUOTE" + report_data


def test_type_none_refuses(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("none\n")
    with pytest.raises(NoAttestationError, match="refusing to start as an attested hub"):
        GramineAttester.open(tmp_path)


def test_missing_directory_refuses(tmp_path: Path) -> None:
    with pytest.raises(NoAttestationError, match="not running inside a Gramine SGX enclave"):
        GramineAttester.open(tmp_path / "no-such-dir")


def test_epid_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("epid")
    with pytest.raises(GramineError, match="EPID") as caught:
        GramineAttester.open(tmp_path)
    assert not isinstance(caught.value, NoAttestationError)


def test_unknown_type_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("tdx-someday")
    with pytest.raises(GramineError, match="unknown attestation type"):
        GramineAttester.open(tmp_path)


def test_quote_round_trip(tmp_path: Path) -> None:
    first, second = bytes(range(64)), bytes(range(64, 128))
    with FakeAttestationDir(tmp_path, make_quote=echo_quote, requests=2) as fake:
        attester = GramineAttester.open(tmp_path)
        assert attester.attestation_type == "dcap"
        assert attester.quote(first) == b"QUOTE" + first
        assert attester.quote(second) == b"QUOTE" + second
    assert fake.served == [first, second]


@pytest.mark.parametrize("size", [0, 32, 63, 65, 128])
def test_report_data_must_be_64_bytes(tmp_path: Path, size: int) -> None:
    attester = GramineAttester(tmp_path)
    with pytest.raises(ValueError, match="exactly 64 bytes"):
        attester.quote(b"\x01" * size)
    assert not (tmp_path / "user_report_data").exists()


def test_concurrent_requests_each_get_their_own_quote(tmp_path: Path) -> None:
    wanted = [bytes([i]) * 64 for i in range(12)]
    with FakeAttestationDir(tmp_path, make_quote=echo_quote, requests=len(wanted)) as fake:
        attester = GramineAttester.open(tmp_path)
        with ThreadPoolExecutor(max_workers=6) as pool:
            quotes = list(pool.map(attester.quote, wanted))
    assert quotes == [b"QUOTE" + data for data in wanted]
    assert sorted(fake.served) == sorted(wanted)


def test_empty_quote_is_an_error(tmp_path: Path) -> None:
    with FakeAttestationDir(tmp_path, make_quote=lambda _: b"", requests=1):
        attester = GramineAttester.open(tmp_path)
        with pytest.raises(GramineError, match="empty quote"):
            attester.quote(bytes(64))


def test_missing_quote_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap")
    attester = GramineAttester.open(tmp_path)
    with pytest.raises(GramineError, match="could not produce a quote"):
        attester.quote(bytes(64))


def test_fake_stops_while_waiting_for_a_reader(tmp_path: Path) -> None:
    with FakeAttestationDir(tmp_path, make_quote=echo_quote, requests=3) as fake:
        pass
    assert fake.served == []
