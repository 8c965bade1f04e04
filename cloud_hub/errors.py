"""Hub start-up errors; request-level errors are `escalade_protocol.ProtocolError`.

HubError            base
└── NoTeeError      no attester is available and simulation was not allowed
"""

from __future__ import annotations


class HubError(Exception):
    """The hub cannot start or run as configured."""


class NoTeeError(HubError):
    pass
