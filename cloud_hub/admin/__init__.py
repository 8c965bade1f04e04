"""The hub's admin API (/admin/v1) and its bearer tokens."""

from cloud_hub.admin.tokens import Scope, authenticate, create_admin_token

__all__ = ["Scope", "authenticate", "create_admin_token"]
