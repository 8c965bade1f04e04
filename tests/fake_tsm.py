"""A stand-in for Linux's configfs-tsm report directory, for tests only.

One entry (``escalade-hub``) with the kernel's attribute names. The request/answer pair runs
on the Gramine fake's FIFO server: ``inblob`` and ``outblob`` are symlinks to its
``user_report_data`` file and ``quote`` FIFO, so the attester's real code path (write
``inblob``, read ``outblob``, ``auxblob``, ``generation``) runs unchanged. The fake writes
``auxblob`` before it answers on ``outblob``; with ``race=True`` it bumps ``generation``
while answering, as the kernel does when another writer touches the entry. (The kernel also
bumps it on every ``inblob`` write; a regular file cannot see writes, so the fake does not.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from fake_gramine import FakeAttestationDir

from attestation.tsm import DEFAULT_ENTRY


class FakeTsmTree:
    def __init__(
        self,
        root: Path,
        *,
        provider: str,
        make_evidence: Callable[[bytes], tuple[bytes, bytes]],
        requests: int,
        race: bool = False,
    ) -> None:
        self.root = root
        self.entry = root / DEFAULT_ENTRY
        self.make_evidence = make_evidence
        self.race = race
        self._server = FakeAttestationDir(self.entry, make_quote=self._answer, requests=requests)
        (self.entry / "provider").write_text(provider + "\n", encoding="ascii")
        (self.entry / "generation").write_text("1\n", encoding="ascii")
        (self.entry / "auxblob").write_bytes(b"")
        (self.entry / "inblob").symlink_to("user_report_data")
        (self.entry / "outblob").symlink_to("quote")

    @property
    def served(self) -> list[bytes]:
        return self._server.served

    def _answer(self, report_data: bytes) -> bytes:
        outblob, auxblob = self.make_evidence(report_data)
        (self.entry / "auxblob").write_bytes(auxblob)
        if self.race:
            generation = self.entry / "generation"
            generation.write_text(f"{int(generation.read_text()) + 1}\n", encoding="ascii")
        return outblob

    def __enter__(self) -> FakeTsmTree:
        self._server.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.__exit__(exc_type, exc, tb)
