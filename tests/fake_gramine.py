"""A stand-in for Gramine's ``/dev/attestation``, for tests only.

`FakeAttestationDir` makes ``quote`` a named pipe served by a thread, so the attester's real
code path (write ``user_report_data``, then open and read ``quote``) runs unchanged: the server
learns that a quote is wanted when the attester opens the pipe, reads the report data the
attester wrote just before, and answers with ``make_quote(report_data)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

JOIN_TIMEOUT_S = 5.0


class FakeAttestationDir:
    """A directory that answers like Gramine's ``/dev/attestation``. For tests only.

    ``attestation_type`` and ``user_report_data`` are regular files; ``quote`` is a FIFO.
    A background thread serves up to ``requests`` quotes. After each answer it replaces the
    FIFO with a fresh one before closing its end, so a reader that has not closed the old pipe
    yet can never be mistaken for the next request.
    """

    def __init__(
        self,
        root: Path,
        *,
        make_quote: Callable[[bytes], bytes],
        requests: int,
        attestation_type: str = "dcap\n",
    ) -> None:
        self.root = root
        self.make_quote = make_quote
        self.requests = requests
        self.served: list[bytes] = []
        self.error: BaseException | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "attestation_type").write_text(attestation_type, encoding="ascii")
        (root / "user_report_data").write_bytes(b"")
        self.quote_path = root / "quote"
        os.mkfifo(self.quote_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-attestation", daemon=True)

    def __enter__(self) -> FakeAttestationDir:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self.error is not None and exc is None:
            raise AssertionError("the fake attestation server failed") from self.error

    def _serve(self) -> None:
        try:
            for _ in range(self.requests):
                # Blocks until a reader opens the pipe: the attester asking for its quote.
                fd = os.open(self.quote_path, os.O_WRONLY)
                try:
                    if self._stop.is_set():
                        return
                    report_data = (self.root / "user_report_data").read_bytes()
                    self.served.append(report_data)
                    view = memoryview(self.make_quote(report_data))
                    while view:
                        view = view[os.write(fd, view) :]
                    os.unlink(self.quote_path)
                    os.mkfifo(self.quote_path)
                finally:
                    os.close(fd)  # the reader sees end-of-file: the quote is complete
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        """End the server thread, waking it if it waits for a reader; bounded."""
        self._stop.set()
        self._thread.join(timeout=0.0)
        for _ in range(int(JOIN_TIMEOUT_S / 0.05)):
            if not self._thread.is_alive():
                return
            try:
                wake = os.open(self.quote_path, os.O_RDONLY | os.O_NONBLOCK)
            except FileNotFoundError:  # between unlink and mkfifo
                wake = None
            try:
                self._thread.join(timeout=0.05)
            finally:
                if wake is not None:
                    os.close(wake)
        raise AssertionError("the fake attestation server did not stop")
