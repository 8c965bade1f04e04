"""The attester inside a confidential VM: reports through Linux's configfs-tsm interface.

Linux 6.7+ (``CONFIG_TSM_REPORTS``, with the ``sev-guest`` or ``tdx-guest`` driver) exposes
one directory per report request under ``/sys/kernel/config/tsm/report/``; ``mkdir`` creates
an entry with these attributes:

* ``inblob``: write the 64 bytes of REPORT_DATA;
* ``outblob``: read the evidence over them: an SEV-SNP attestation report (provider
  ``sev_guest``) or a TDX DCAP quote (provider ``tdx_guest``);
* ``auxblob``: SNP only, the host's certificate table (VCEK/VLEK, ASK, ARK), may be empty;
* ``provider``: which of the two;
* ``generation``: bumped on every write to the entry, so a reader can tell that another
  writer changed ``inblob`` between its write and its read.

One entry is kept for the process, and a lock keeps write-then-read together (as with
Gramine's ``/dev/attestation``); a generation change between two reads is reported, never
served as evidence over someone else's REPORT_DATA.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from attestation.binding import REPORT_DATA_SIZE

TSM_REPORT_DIR: Final = Path("/sys/kernel/config/tsm/report")
DEFAULT_ENTRY: Final = "escalade-hub"
PROVIDERS: Final[dict[str, Literal["sev-snp", "tdx"]]] = {
    "sev_guest": "sev-snp",
    "tdx_guest": "tdx",
}


class TsmError(Exception):
    """configfs-tsm is unusable here or answered something unexpected."""


class NoTsmError(TsmError):
    """There is no configfs-tsm report interface: not a confidential VM (or an old kernel)."""


@dataclass(frozen=True, slots=True)
class TsmReport:
    outblob: bytes
    auxblob: bytes
    generation: int


class TsmAttester:
    """Evidence over caller-chosen REPORT_DATA from configfs-tsm. Use `TsmAttester.open()`."""

    def __init__(self, entry: Path, tee: Literal["sev-snp", "tdx"]) -> None:
        self.entry = entry
        self.tee = tee
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        root: Path = TSM_REPORT_DIR,
        *,
        expect: Literal["sev-snp", "tdx"] | None = None,
        name: str = DEFAULT_ENTRY,
    ) -> TsmAttester:
        if not root.is_dir():
            raise NoTsmError(
                f"{root} does not exist: no configfs-tsm report interface here (needs a "
                "confidential VM with Linux 6.7+, CONFIG_TSM_REPORTS, the sev-guest or "
                "tdx-guest driver, and configfs mounted at /sys/kernel/config)"
            )
        entry = root / name
        try:
            entry.mkdir(exist_ok=True)
            provider = (entry / "provider").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TsmError(f"cannot open the configfs-tsm entry {entry}: {exc}") from exc
        tee = PROVIDERS.get(provider)
        if tee is None:
            raise TsmError(
                f"{entry / 'provider'} names {provider!r}; expected sev_guest or tdx_guest"
            )
        if expect is not None and tee != expect:
            raise NoTsmError(
                f"configfs-tsm at {root} is provided by {provider} ({tee}), not {expect}"
            )
        return cls(entry, tee)

    def report(self, report_data: bytes) -> TsmReport:
        """Evidence with exactly these 64 bytes of REPORT_DATA. Thread-safe."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(
                f"report_data must be exactly {REPORT_DATA_SIZE} bytes, got {len(report_data)}"
            )
        with self._lock:
            try:
                with (self.entry / "inblob").open("wb", buffering=0) as sink:
                    written = sink.write(report_data)
                if written != REPORT_DATA_SIZE:
                    raise TsmError(f"short write to inblob: {written} of {REPORT_DATA_SIZE}")
                before = self._generation()
                outblob = (self.entry / "outblob").read_bytes()
                aux = self.entry / "auxblob"
                auxblob = aux.read_bytes() if aux.exists() else b""
                after = self._generation()
            except OSError as exc:
                raise TsmError(f"configfs-tsm could not produce a report: {exc}") from exc
        if before != after:
            raise TsmError(
                f"generation moved {before} -> {after}: another writer changed the request"
            )
        if not outblob:
            raise TsmError(f"{self.entry / 'outblob'} returned no evidence")
        return TsmReport(outblob=outblob, auxblob=auxblob, generation=after)

    def quote(self, report_data: bytes) -> bytes:
        """The bare evidence bytes (a TDX quote, or an SNP report)."""
        return self.report(report_data).outblob

    def _generation(self) -> int:
        text = (self.entry / "generation").read_text(encoding="ascii").strip()
        try:
            return int(text)
        except ValueError:
            raise TsmError(f"generation {text!r} is not a number") from None
