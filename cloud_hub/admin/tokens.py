"""Admin API bearer tokens: 256-bit random, stored as SHA-256, scoped, compared in constant time.

Scopes: `admin:read` (every GET) and `admin:write` (every change). A token is shown once, when
it is made (`cloud-hub create-admin-token`, on the hub host).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from cloud_hub.store import AdminToken, Store

ADMIN_TOKEN_PREFIX = "esc_adm_"  # noqa: S105 (a public prefix, not a secret)


class Scope(enum.StrEnum):
    READ = "admin:read"
    WRITE = "admin:write"


def admin_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_admin_token(
    store: Store, *, scopes: frozenset[Scope], ttl: timedelta | None = None, note: str = ""
) -> str:
    """Make an admin token with these scopes; returns it (shown once)."""
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_admin_token(
        admin_token_hash(token), scopes=frozenset(s.value for s in scopes), ttl=ttl, note=note
    )
    return token


def authenticate(store: Store, token: str, *, now: datetime | None = None) -> AdminToken | None:
    """The live admin token `token` is, or None (unknown, revoked or expired).

    The lookup is by hash (an index probe on a value the caller cannot steer); the stored hash
    is then compared with `hmac.compare_digest`, so no comparison leaks by its timing."""
    if not token.startswith(ADMIN_TOKEN_PREFIX) or len(token) > 256:
        return None
    digest = admin_token_hash(token)
    found = store.admin_token(digest)
    if found is None or not hmac.compare_digest(found.token_hash, digest):
        return None
    now = now or datetime.now(UTC)
    if found.revoked_at is not None or (found.expires_at is not None and found.expires_at <= now):
        return None
    return found
