"""Enrollment tokens as administrators make them: like `cloud_hub.enrollment.create_token`,
and their creation is in the audit log (who made a token that let a device in)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from cloud_hub.enrollment import TOKEN_PREFIX, token_hash
from cloud_hub.store import Store


def issue_token(
    store: Store,
    *,
    ttl: timedelta,
    note: str,
    uses: int,
    auto_approve: bool,
    actor: str,
) -> tuple[str, datetime]:
    """A new enrollment token (shown once) and its expiry; audited as `actor`'s."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = store.add_token(
        token_hash(token),
        ttl=ttl,
        note=note,
        uses=uses,
        auto_approve=auto_approve,
        audited_by=actor,
    )
    return token, expires
