"""Exceptions for malformed inputs, and the failure record a verdict lists."""

from __future__ import annotations

from dataclasses import dataclass


class QuoteFormatError(ValueError):
    """The quote bytes do not follow the Intel DCAP quote layout."""


class CollateralFormatError(ValueError):
    """A collateral field is missing or not of the documented shape."""


class DerError(ValueError):
    """A DER structure (in the PCK certificate's SGX extension) is malformed."""


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """One failed check: a stable machine-readable name and a human-readable reason."""

    check: str
    message: str
