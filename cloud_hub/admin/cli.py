"""`cloud-hub admin ...`: the administrator's commands, over the hub's admin API (HTTP), never
the database, so they work from any machine that reaches the hub and against a hub whose
database only its enclave can read.

The hub: `--hub URL` or ESCALADE_HUB_ADMIN_URL. The token (`cloud-hub create-admin-token` on
the hub host): `--token`, ESCALADE_ADMIN_TOKEN, or `--token-file` / ESCALADE_ADMIN_TOKEN_FILE,
a file only its owner may read (0600). Reporting commands take `--json`. Exit 0 done, 1 a check
failed (`audit verify`), 2 a usage error or a refusal (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

from pydantic import BaseModel, ValidationError

from cloud_hub.admin.client import AdminCallError, AdminClient, dumps
from cloud_hub.admin.fleet_models import DeviceCost, ModelRegister
from cloud_hub.admin.models import MAX_PAGE, StatusChange, TokenCreate
from cloud_hub.store.catalog import FileDigest, ReferenceSummary, bundle_artifacts
from cloud_hub.store.policies import HubPolicy

HUB_ENV = "ESCALADE_HUB_ADMIN_URL"
TOKEN_ENV = "ESCALADE_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
TOKEN_FILE_ENV = "ESCALADE_ADMIN_TOKEN_FILE"  # noqa: S105
Command = Callable[[argparse.Namespace, AdminClient], int]


class AdminUsageError(AdminCallError):
    """The command line or its environment cannot work (no hub, no token, a readable file)."""


def _token_from_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise AdminUsageError(f"cannot read the token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminUsageError(
            f"the token file {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )
    return text


def client_of(args: argparse.Namespace) -> AdminClient:
    hub = args.hub or os.environ.get(HUB_ENV)
    if not hub:
        raise AdminUsageError(f"no hub: pass --hub URL or set {HUB_ENV}")
    token = args.token or os.environ.get(TOKEN_ENV)
    token_file = args.token_file or os.environ.get(TOKEN_FILE_ENV)
    if not token and token_file:
        token = _token_from_file(Path(token_file).expanduser())
    if not token:
        raise AdminUsageError(
            f"no admin token: pass --token-file PATH (or set {TOKEN_ENV}); make one with "
            "`cloud-hub create-admin-token` on the hub host"
        )
    return AdminClient(hub, token, timeout_s=args.timeout)


def _say(args: argparse.Namespace, answer: BaseModel, text: str) -> int:
    """Print the API's answer (`--json`) or one line for a person; the command succeeded."""
    print(dumps(answer) if args.json else text)
    return 0


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- enrollment tokens ----------------------------------------------------------------------


def tokens_create(args: argparse.Namespace, client: AdminClient) -> int:
    try:
        body = TokenCreate(
            ttl_hours=args.ttl_hours,
            uses=args.uses,
            auto_approve=args.auto_approve,
            note=args.note,
        )
    except ValidationError as exc:
        raise AdminUsageError(_first_error(exc)) from None
    created = client.create_token(body)
    if args.json:
        print(dumps(created))
    elif args.quiet:
        print(created.token)
    else:
        approval = "active at once" if created.auto_approve else "pending until approved"
        print(
            f"enrollment token for {created.uses} device(s), {approval}, valid until "
            f"{created.expires_at.isoformat()} (shown once):\n{created.token}"
        )
    return 0


def tokens_list(args: argparse.Namespace, client: AdminClient) -> int:
    listed = client.list_tokens()
    if args.json:
        print(dumps(listed))
        return 0
    rows = [
        (
            t.token_id[:16],
            t.uses_left,
            "auto" if t.auto_approve else "manual",
            _when(t.expires_at),
            "revoked" if t.revoked_at else "",
            t.note,
        )
        for t in listed.items
    ]
    _table(("token id", "uses left", "approval", "expires", "state", "note"), rows)
    return 0


def tokens_revoke(args: argparse.Namespace, client: AdminClient) -> int:
    token_id = args.token_id
    if len(token_id) < 64:
        # The listing shows a prefix: find the one token it names.
        matches = [
            t.token_id for t in client.list_tokens().items if t.token_id.startswith(token_id)
        ]
        if len(matches) != 1:
            raise AdminUsageError(f"{token_id!r} names {len(matches)} enrollment tokens, not one")
        token_id = matches[0]
    revoked = client.revoke_token(token_id, StatusChange(reason=args.reason))
    return _say(args, revoked, f"enrollment token {revoked.token_id[:16]} revoked")


# -- devices --------------------------------------------------------------------------------


def devices_list(args: argparse.Namespace, client: AdminClient) -> int:
    items = []
    cursor = None
    while True:
        page = client.list_devices(
            status=args.status, profile=args.profile, cursor=cursor, limit=MAX_PAGE
        )
        items += page.items
        cursor = page.next_cursor
        if cursor is None or len(items) >= args.limit:
            break
    items = items[: args.limit]
    if args.json:
        print("[" + ",".join(d.model_dump_json() for d in items) + "]")
        return 0
    rows = [
        (d.device_id, d.profile, d.status, _when(d.status_changed_at or d.enrolled_at),
         _when(d.last_seen_at), d.status_reason)
        for d in items
    ]  # fmt: skip
    _table(("device", "profile", "status", "since", "last seen", "reason"), rows)
    return 0


def _device_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise AdminUsageError(f"{text!r} is not a device id") from None


def devices_get(args: argparse.Namespace, client: AdminClient) -> int:
    device = client.get_device(_device_id(args.device_id))
    if args.json:
        print(dumps(device))
        return 0
    for name, value in device.model_dump(mode="json").items():
        print(f"{name:18} {value}")
    return 0


def _change(action: str) -> Command:
    def run(args: argparse.Namespace, client: AdminClient) -> int:
        reason = args.reason or f"{action} by administrator"
        device = client.change_device(
            _device_id(args.device_id), action, StatusChange(reason=reason[:200])
        )
        return _say(args, device, f"device {device.device_id} is now {device.status}")

    return run


# -- models ---------------------------------------------------------------------------------


def registration_of(bundle_dir: Path, note: str) -> ModelRegister:
    """A model version's registration from its bundle: every artifact's digest (checked
    against the manifest) and the scalars of its reference statistics."""
    from cloud_hub.poisoning.reference import ReferenceStats
    from escalade_protocol.artifacts import load_manifest, verified_path

    manifest = load_manifest(bundle_dir)
    files = []
    for artifact in bundle_artifacts(manifest):
        path = verified_path(bundle_dir, artifact)
        files.append(
            FileDigest(path=artifact.path, sha256=artifact.sha256, size=path.stat().st_size)
        )
    stats = ReferenceStats.load(verified_path(bundle_dir, manifest.calibration))
    reference = ReferenceSummary(
        embedding_dim=stats.dim,
        num_classes=stats.num_classes,
        target_fpr=stats.target_fpr,
        norm_low=stats.norm_low,
        norm_high=stats.norm_high,
        mahalanobis_low=stats.mahalanobis_low,
        mahalanobis_high=stats.mahalanobis_high,
        class_mahalanobis_high=stats.class_mahalanobis_high,
        calibration_sha256=manifest.calibration.sha256,
    )
    return ModelRegister(
        model_id=manifest.model_id,
        version=manifest.model_version,
        files=files,
        reference=reference,
        note=note,
    )


def models_register(args: argparse.Namespace, client: AdminClient) -> int:
    registered = client.register_model(registration_of(Path(args.bundle), args.note))
    text = f"registered {registered.model_id} v{registered.version} ({len(registered.files)} files)"
    return _say(args, registered, text)


def models_list(args: argparse.Namespace, client: AdminClient) -> int:
    page = client.list_models(cursor=None, limit=MAX_PAGE)
    if args.json:
        print(dumps(page))
        return 0
    rows = [
        (m.model_id, ", ".join(str(v) for v in m.versions), _when(m.created_at)) for m in page.items
    ]
    _table(("model", "versions", "first registered"), rows)
    return 0


def models_get(args: argparse.Namespace, client: AdminClient) -> int:
    detail = client.get_model(args.model_id)
    if args.json:
        print(dumps(detail))
        return 0
    for v in detail.versions:
        print(f"{v.model_id} v{v.version}, registered {_when(v.registered_at)} {v.note}")
        for f in v.files:
            print(f"  {f.path:28} {f.sha256}  {f.size} bytes")
    return 0


# -- policy ---------------------------------------------------------------------------------


def policies_get(args: argparse.Namespace, client: AdminClient) -> int:
    stored = client.get_policy()
    if args.json:
        print(dumps(stored))
        return 0
    since = "built-in defaults" if stored.revision == 0 else f"set {_when(stored.updated_at)}"
    print(f"policy revision {stored.revision} ({since}): {stored.policy.summary()}")
    return 0


_REPUTATION_FLAGS = ("drift_allowance", "decision_limit", "failure_score", "hold", "ceiling")


def policies_set(args: argparse.Namespace, client: AdminClient) -> int:
    """Change the named fields of the current policy (the rest stay as they are)."""
    current = client.get_policy().policy.model_dump()
    if args.timestamp_window_ms is not None:
        current["timestamp_window_ms"] = args.timestamp_window_ms
    if args.reject_score is not None:
        current["reject_score"] = args.reject_score
    if args.auto_approve is not None:
        current["auto_approve"] = args.auto_approve == "on"
    if args.audit_rate is not None:
        current["audit_rate"] = args.audit_rate
    for name in _REPUTATION_FLAGS:
        value = getattr(args, name)
        if value is not None:
            current["reputation"][name] = value
    try:
        policy = HubPolicy.model_validate(current)
    except ValidationError as exc:
        raise AdminUsageError(_first_error(exc)) from None
    stored = client.put_policy(policy)
    return _say(args, stored, f"policy revision {stored.revision}: {stored.policy.summary()}")


# -- audit, stats, replicas -----------------------------------------------------------------


def audit_list(args: argparse.Namespace, client: AdminClient) -> int:
    device = _device_id(args.device) if args.device else None
    page = client.audit(device_id=device, cursor=args.after, limit=args.limit)
    if args.json:
        print(dumps(page))
        return 0
    rows = [
        (e.id, _when(e.at), e.action, e.actor, e.device_id or "-", e.reason[:60])
        for e in page.items
    ]
    _table(("id", "at", "action", "actor", "device", "reason"), rows)
    if page.next_cursor:
        print(f"(more: --after {page.next_cursor})")
    return 0


def audit_verify(args: argparse.Namespace, client: AdminClient) -> int:
    report = client.verify_audit()
    broken = report.first_broken
    if args.json:
        print(dumps(report))
    elif broken is None:
        print(f"audit chain verifies: {report.entries} entries, last hash {report.last_hash}")
    else:
        print(f"audit chain BROKEN at entry {broken.entry_id}: {broken.reason}")
    return 0 if report.ok else 1


def _us(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f}"


def stats(args: argparse.Namespace, client: AdminClient) -> int:
    if args.by == "model":
        listed = client.model_stats(since_hours=args.since_hours, model_id=args.model)
        if args.json:
            print(dumps(listed))
            return 0
        keyed = [(f"{s.model_id} v{s.model_version}", s.figures) for s in listed.items]
    else:
        page = client.device_stats(since_hours=args.since_hours, cursor=None, limit=args.limit)
        if args.json:
            print(dumps(page))
            return 0
        keyed = [(str(s.device_id), s.figures) for s in page.items]
        prices = {str(s.device_id): s.cost for s in page.items}
    rows = [
        (
            key,
            f.outcomes,
            f.escalated,
            sum(r.count for r in f.refusals),
            " ".join(f"{r.code}={r.count}" for r in f.refusals) or "-",
            _us(f.hub_latency.p50_us),
            _us(f.hub_latency.p99_us),
            f.hub_accepted_recent,
            *([_price(prices.get(key))] if args.by != "model" else []),
        )
        for key, f in keyed
    ]
    headers: tuple[str, ...] = (args.by, "outcomes", "escalated", "refused", "by code",
                                "p50 ms", "p99 ms", "accepted (recent)")  # fmt: skip
    if args.by != "model":
        headers = (*headers, "hub cost (price, model ms)")
    _table(headers, rows)
    return 0


def _price(cost: DeviceCost | None) -> str:
    return "-" if cost is None else f"{cost.price:.4g}, {cost.model_ms:.1f}"


def replicas(args: argparse.Namespace, client: AdminClient) -> int:
    page = client.replicas(cursor=None, limit=MAX_PAGE)
    if args.json:
        print(dumps(page))
        return 0
    rows = [
        (r.replica_id, r.url, r.tee, r.key_fingerprint[:16], _when(r.heartbeat_at),
         "stopped" if r.stopped_at else "")
        for r in page.items
    ]  # fmt: skip
    _table(("replica", "url", "tee", "key", "heartbeat", "state"), rows)
    return 0


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    return f"{where}: {e['msg']}" if where else e["msg"]


# -- the parser -----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _connection() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", default=None, help=f"the hub's base URL (or {HUB_ENV})")
    common.add_argument(
        "--token",
        default=None,
        help=f"admin token (visible to other local users in `ps`: prefer {TOKEN_ENV} "
        "or --token-file)",
    )
    common.add_argument(
        "--token-file", default=None, help=f"file holding the token, mode 0600 ({TOKEN_FILE_ENV})"
    )
    common.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds (30)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


# Quoted: argparse's class is generic only to type checkers.
Group: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Leaf: TypeAlias = Callable[[Group, str, str, Command], argparse.ArgumentParser]


def _add_tokens(admin: Group, leaf: Leaf) -> None:
    tokens = admin.add_parser("tokens", help="enrollment tokens").add_subparsers(
        dest="admin_tokens", required=True
    )
    create = leaf(tokens, "create", "make an enrollment token (shown once)", tokens_create)
    create.add_argument("--ttl-hours", type=float, default=24.0, help="validity (24)")
    create.add_argument("--uses", type=int, default=1, help="devices it may enroll (1)")
    approval = create.add_mutually_exclusive_group()
    approval.add_argument(
        "--manual-approval",
        dest="auto_approve",
        action="store_false",
        default=None,
        help="its devices wait, pending, for `devices approve` (default: the policy's)",
    )
    approval.add_argument(
        "--auto-approve", dest="auto_approve", action="store_true", help="active at once"
    )
    create.add_argument("--note", default="")
    create.add_argument("--quiet", action="store_true", help="print the token alone")
    leaf(tokens, "list", "list enrollment tokens", tokens_list)
    revoke = leaf(tokens, "revoke", "revoke an enrollment token", tokens_revoke)
    revoke.add_argument("token_id", help="its id (or a unique prefix, as `tokens list` shows)")
    revoke.add_argument("--reason", default="revoked by administrator")


def _add_devices(admin: Group, leaf: Leaf) -> None:
    devices = admin.add_parser("devices", help="enrolled devices").add_subparsers(
        dest="admin_devices", required=True
    )
    listing = leaf(devices, "list", "devices, status and reason", devices_list)
    listing.add_argument(
        "--status", choices=("pending", "active", "quarantined", "revoked"), default=None
    )
    listing.add_argument("--profile", default=None)
    listing.add_argument("--limit", type=int, default=10_000, help="at most this many (10000)")
    get = leaf(devices, "get", "one device", devices_get)
    get.add_argument("device_id")
    for action, helptext in (
        ("approve", "approve a pending device"),
        ("quarantine", "quarantine an active device"),
        ("release", "release a quarantined device"),
        ("revoke", "revoke a device for good"),
    ):
        p = leaf(devices, action, helptext, _change(action))
        p.add_argument("device_id")
        p.add_argument("--reason", default=None)


def _add_models_and_policy(admin: Group, leaf: Leaf) -> None:
    models = admin.add_parser("models", help="the model catalogue").add_subparsers(
        dest="admin_models", required=True
    )
    register = leaf(models, "register", "register a bundle's model version", models_register)
    register.add_argument("--bundle", required=True, help="the model bundle directory")
    register.add_argument("--note", default="")
    leaf(models, "list", "registered models", models_list)
    model = leaf(models, "get", "a model's versions and file digests", models_get)
    model.add_argument("model_id")

    policies = admin.add_parser("policies", help="the hub's policy").add_subparsers(
        dest="admin_policies", required=True
    )
    leaf(policies, "get", "the policy in force", policies_get)
    setter = leaf(policies, "set", "change some of the policy's fields", policies_set)
    setter.add_argument("--timestamp-window-ms", type=int, default=None)
    setter.add_argument("--reject-score", type=float, default=None)
    setter.add_argument("--auto-approve", choices=("on", "off"), default=None)
    setter.add_argument(
        "--audit-rate",
        type=float,
        default=None,
        help="share of escalations audited by re-encoding, 0-1 (docs/provenance.md)",
    )
    for name in _REPUTATION_FLAGS:
        kind = int if name == "hold" else float
        setter.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)


def _add_reports(admin: Group, leaf: Leaf) -> None:
    audit = admin.add_parser("audit", help="the audit log").add_subparsers(
        dest="admin_audit", required=True
    )
    entries = leaf(audit, "list", "audit entries, oldest first", audit_list)
    entries.add_argument("--device", default=None, help="only this device's entries")
    entries.add_argument("--after", type=int, default=None, help="entries after this id")
    entries.add_argument("--limit", type=int, default=100)
    leaf(audit, "verify", "check the hash chain (exit 1 if broken)", audit_verify)

    figures = leaf(admin, "stats", "escalations, refusals by code, latency", stats)
    figures.add_argument("--by", choices=("device", "model"), default="model")
    figures.add_argument("--since-hours", type=_positive_float, default=24.0)
    figures.add_argument("--model", default=None, help="only this model (--by model)")
    figures.add_argument("--limit", type=int, default=MAX_PAGE, help="devices (--by device)")

    leaf(admin, "replicas", "hub replicas sharing the database", replicas)


def add_admin_commands(sub: Group) -> None:
    """Register `cloud-hub admin ...` on the top-level parser's subcommands."""
    common = _connection()
    admin = sub.add_parser(
        "admin",
        help="administer a running hub over its admin API (HTTP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="admin_group", required=True)

    def leaf(group: Group, name: str, helptext: str, command: Command) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=helptext, parents=[common])
        p.set_defaults(func=lambda args: command(args, client_of(args)))
        return p

    _add_tokens(admin, leaf)
    _add_devices(admin, leaf)
    _add_models_and_policy(admin, leaf)
    _add_reports(admin, leaf)
    from cloud_hub.admin.rollout_cli import add_rollout_commands

    add_rollout_commands(admin, leaf)
