"""`cloud-hub`: serve, migrate, the administrator's commands over the admin API (`admin ...`),
and the host-local bootstrap commands.

`cloud-hub admin ...` (cloud_hub/admin/cli.py) talks to a running hub over HTTP and is how an
administrator works. `tokens`, `devices`, `create-admin-token` and `audit verify` open the
database directly: they are the host-local bootstrap (the first admin token, a hub that is
not running), for whoever can read the hub's data dir — they cannot reach a database sealed
inside the enclave.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine

from cloud_hub import lan_devices
from cloud_hub.admin import Scope, create_admin_token
from cloud_hub.admin.cli import add_admin_commands
from cloud_hub.admin.client import AdminCallError
from cloud_hub.advertise import AdvertiseSettings
from cloud_hub.app import ADVERTISER, build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.enrollment import create_token
from cloud_hub.errors import HubError
from cloud_hub.poisoning import ReferenceStatsError
from cloud_hub.store import Device, Store, migrate_database, schema_version, sqlite_url
from cloud_hub.store.files import prepare_data_dir, prepare_sqlite_file
from escalade_protocol import eventloop
from escalade_protocol.artifacts import BundleError
from escalade_protocol.entrypoint import run_command
from escalade_protocol.envelope import HpkeSuiteId
from escalade_protocol.http import serve_until_terminated
from escalade_protocol.hub_keys import SUITE_STRENGTH, suite_named


def _url(args: argparse.Namespace, *, create: bool) -> str:
    if args.database_url:
        return str(args.database_url)
    return sqlite_url(prepare_data_dir(Path(args.data_dir), create=create))


def _store(args: argparse.Namespace) -> Store:
    """The hub database the command names, which must exist and be migrated."""
    return Store.open(_url(args, create=False))


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


async def _serve(config: HubConfig, advertise: AdvertiseSettings | None) -> None:
    state = build_state(config)
    app = make_app(state, advertise=advertise)

    def listening(url: str) -> None:
        state.replicas.listening(url)
        if ADVERTISER in app:
            app[ADVERTISER].listening(int(url.rsplit(":", 1)[1]))
        logging.getLogger("cloud_hub").info(
            "hub listening on %s, model %s v%d, hub key %s",
            url,
            state.service.model.info.model_id,
            state.service.model.info.model_version,
            state.identity.key_id.hex(),
        )

    await serve_until_terminated(
        app,
        host=config.host,
        port=config.port,
        announce_ready=config.announce_ready,
        on_listening=listening,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    if not args.database_url:
        # Unless told to (--migrate), the hub creates nothing: `cloud-hub migrate` makes the
        # data dir and the schema, and the hub refuses a database that is not this build's.
        data_dir = prepare_data_dir(data_dir, create=args.migrate)
    if args.migrate:
        migrate_database(args.database_url or sqlite_url(data_dir))
    config = HubConfig(
        data_dir=data_dir,
        models_dir=Path(args.models).expanduser(),
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        allow_simulated_tee=args.allow_simulated_tee,
        tee=args.tee,
        attestation_dir=Path(args.attestation_dir),
        collateral_file=Path(args.collateral) if args.collateral else None,
        pccs_url=args.pccs_url,
        kds_url=args.kds_url,
        hpke_suites=args.hpke_suites,
        seal_keys=args.seal_keys,
        announce_ready=args.ready,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        audit_rate=args.audit_rate,
        audit_deadline_s=args.audit_deadline_s,
        advertise_url=args.advertise_url,
        replica_heartbeat_s=args.replica_heartbeat_s,
        # A replica is gone after five missed heartbeats.
        replica_liveness_s=5 * args.replica_heartbeat_s,
        release_keys=tuple(args.release_key or ()),
        hub_models=args.hub_models,
        route_max_price_per_1k=args.route_max_price,
        route_max_model_ms=args.route_max_model_ms,
        route_exploration=args.route_exploration,
        hub_price_per_1k=args.hub_price,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            eventloop.run(_serve(config, _advertise(args)), choice=args.event_loop)
    except OSError as exc:
        if exc.errno not in _LISTEN_ERRORS:
            raise
        reason = exc.strerror or str(exc)
        raise HubError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    return 0


# What binding the listening socket fails with: port taken, address not ours, port privileged.
_LISTEN_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.check:
        return _migrate_check(args)
    report = migrate_database(_url(args, create=True))
    was = report.before.status.value
    if report.before.revision:
        was += f" {report.before.revision}"
    if args.json:
        _print_json({"revision": report.revision, "before": was})
    else:
        print(f"hub database schema at revision {report.revision} (was: {was})")
    return 0


def _migrate_check(args: argparse.Namespace) -> int:
    """Say where the schema stands, change nothing: exit 0 if current, 1 if not."""
    if args.database_url:
        url = args.database_url
    else:
        data_dir = prepare_data_dir(Path(args.data_dir), create=False)
        prepare_sqlite_file(data_dir / "hub.db", create=False)
        url = sqlite_url(data_dir)
    engine = create_engine(url)
    try:
        state = schema_version.read_state(engine)
    finally:
        engine.dispose()
    current = state.status is schema_version.SchemaStatus.CURRENT
    if args.json:
        _print_json({"status": state.status.value, "revision": state.revision, "head": state.head})
    else:
        print(f"schema {state.status.value} (revision {state.revision}, this build {state.head})")
    return 0 if current else 1


# A token lives at least a minute and at most a year.
_TTL_HOURS = (1 / 60, 24 * 365)


def _ttl_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of hours") from None
    low, high = _TTL_HOURS
    if not low <= value <= high:  # also refuses nan and inf
        raise ValueError(f"must be between 1 minute ({low:.4f}) and {high:g} hours, got {text}")
    return value


def cmd_token_create(args: argparse.Namespace) -> int:
    # Checked here, not by argparse, so that the refusal is one line (no usage block).
    try:
        ttl_hours = _ttl_hours(args.ttl_hours)
    except ValueError as exc:
        print(f"cloud-hub: error: --ttl-hours {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.uses <= MAX_TOKEN_USES:
        print(f"cloud-hub: error: --uses must be 1 to {MAX_TOKEN_USES}", file=sys.stderr)
        return 2
    store = _store(args)
    try:
        # Host-local bootstrap: not audited (the admin API's tokens are, `token_create`).
        token, expires = create_token(
            store,
            ttl=timedelta(hours=ttl_hours),
            note=args.note,
            uses=args.uses,
            auto_approve=not args.manual_approval,
        )
    finally:
        store.close()
    if args.json:
        _print_json(
            {
                "token": token,
                "expires_at": expires.isoformat(),
                "uses": args.uses,
                "auto_approve": not args.manual_approval,
            }
        )
    elif args.quiet:
        print(token)
    else:
        print(f"enrollment token (shown once, valid until {expires.isoformat()}):\n{token}")
    return 0


MAX_TOKEN_USES = 10_000


def cmd_create_admin_token(args: argparse.Namespace) -> int:
    try:
        scopes = frozenset(Scope(s) for s in args.scopes)
    except ValueError:
        known = ", ".join(s.value for s in Scope)
        print(f"cloud-hub: error: --scopes takes {known}", file=sys.stderr)
        return 2
    ttl = None
    if args.ttl_hours is not None:
        try:
            ttl = timedelta(hours=_ttl_hours(args.ttl_hours))
        except ValueError as exc:
            print(f"cloud-hub: error: --ttl-hours {exc}", file=sys.stderr)
            return 2
    store = _store(args)
    try:
        token = create_admin_token(store, scopes=scopes, ttl=ttl, note=args.note)
    finally:
        store.close()
    if args.json:
        _print_json({"token": token, "scopes": sorted(scopes)})
        return 0
    print(f"admin token with scopes {' '.join(sorted(scopes))}; shown once, only here:")
    print(token)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        verdict = store.verify_audit_chain()
    finally:
        store.close()
    broken = verdict.first_broken
    if args.json:
        _print_json(
            {
                "ok": verdict.ok,
                "entries": verdict.entries,
                "last_hash": verdict.last_hash,
                "first_broken": None
                if broken is None
                else {"entry_id": broken.entry_id, "reason": broken.reason},
            }
        )
    elif broken is None:
        print(f"audit chain verifies: {verdict.entries} entries, last hash {verdict.last_hash}")
    else:
        print(f"audit chain BROKEN at entry {broken.entry_id}: {broken.reason}")
    return 0 if verdict.ok else 1


def cmd_devices_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rows = store.list_devices()
    finally:
        store.close()
    if args.json:
        print(json.dumps([_device_json(d) for d in rows], indent=2))
        return 0
    print(f"{'device':36}  {'profile':14} {'status':11} {'since':20} reason")
    for d in rows:
        since = (d.status_changed_at or d.enrolled_at).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{d.device_id}  {d.profile:14} {d.status:11} {since:20} {d.status_reason}")
    return 0


def _device_json(d: Device) -> dict[str, object]:
    return {
        "device_id": str(d.device_id),
        "profile": d.profile,
        "status": d.status,
        "reason": d.status_reason,
        "status_changed_at": d.status_changed_at.isoformat() if d.status_changed_at else None,
        "enrolled_at": d.enrolled_at.isoformat(),
        "cusum": d.cusum,
    }


def _set_status(
    args: argparse.Namespace, status: str, *, only_from: str | None, action: str | None = None
) -> int:
    try:
        device_id = uuid.UUID(args.device_id)
    except ValueError:
        print(f"cloud-hub: error: {args.device_id!r} is not a device id", file=sys.stderr)
        return 2
    store = _store(args)
    try:
        changed = store.set_device_status(
            device_id,
            status,
            reason=args.reason,
            actor="operator",
            only_from=only_from,
            action=action,
        )
        device = store.get_device(device_id)
    finally:
        store.close()
    if device is None:
        print(f"cloud-hub: error: no device {device_id}", file=sys.stderr)
        return 2
    if not changed:
        print(f"cloud-hub: error: device {device_id} is {device.status}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(_device_json(device))
        return 0
    print(f"device {device_id} is now {device.status} (every hub applies it from its next commit)")
    return 0


def cmd_devices_approve(args: argparse.Namespace) -> int:
    return _set_status(args, "active", only_from="pending", action="approve")


def cmd_devices_release(args: argparse.Namespace) -> int:
    return _set_status(args, "active", only_from="quarantined")


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    return _set_status(args, "revoked", only_from=None)


def cmd_enclave_render(args: argparse.Namespace) -> int:
    from cloud_hub.enclave import current_layout, render_manifest

    try:
        layout = current_layout(
            Path(args.models).expanduser(),
            data_host_dir=Path(args.data_dir).expanduser(),
            host=args.host,
            port=args.port,
            collateral=Path(args.collateral) if args.collateral else None,
            enclave_size=args.enclave_size,
            max_threads=args.max_threads,
            isv_prod_id=args.isv_prod_id,
            isv_svn=args.isv_svn,
        )
        manifest = render_manifest(layout)
    except (ValueError, LookupError) as exc:
        print(f"cloud-hub: error: cannot render the manifest: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(manifest)
    print(f"wrote {args.out}; next: gramine-manifest, gramine-sgx-sign (docs/enclave.md)")
    return 0


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _suites(text: str) -> frozenset[HpkeSuiteId]:
    try:
        suites = frozenset(suite_named(name.strip()) for name in text.split(",") if name.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not suites:
        raise argparse.ArgumentTypeError("name at least one HPKE suite")
    return suites


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def _with_store_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data-dir", default="./hub-data", help="state directory (default ./hub-data)")
    p.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)"
    )
    return p


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = _with_store_args(sub.add_parser("serve", help="run the hub"))
    serve.add_argument("--models", required=True, help="model bundle directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    serve.add_argument(
        "--allow-simulated-tee",
        action="store_true",
        help="serve INSECURE simulated attestation evidence (development only)",
    )
    serve.add_argument(
        "--tee",
        choices=["auto", "sgx-gramine", "tdx", "sev-snp", "simulated"],
        default="auto",
        help="attester: Gramine SGX, TDX or SEV-SNP via configfs-tsm, or INSECURE simulated "
        "(default auto: the first interface present)",
    )
    serve.add_argument(
        "--attestation-dir",
        default="/dev/attestation",
        help="Gramine's attestation pseudo-files (default /dev/attestation)",
    )
    serve.add_argument(
        "--collateral", default=None, help="Intel DCAP collateral JSON to pass on with quotes"
    )
    serve.add_argument(
        "--pccs-url", default=None, help="PCCS to fetch and refresh that collateral from"
    )
    serve.add_argument(
        "--kds-url",
        default=None,
        help="SEV-SNP: fetch the VCEK, chain and CRL from this KDS (AMD's is "
        "https://kdsintf.amd.com) when the host supplies no certificate table; 'offline' reads "
        "only the cache (DATA_DIR/kds-cache)",
    )
    serve.add_argument(
        "--hpke-suites",
        type=_suites,
        default=frozenset(SUITE_STRENGTH),
        help="HPKE suites offered and accepted, comma-separated: x25519, mlkem768-x25519 "
        "(default both; mlkem768-x25519 alone refuses classical envelopes)",
    )
    serve.add_argument(
        "--seal-keys",
        action="store_true",
        help="keep the hub's keys across restarts, sealed to the enclave's measurement "
        "(Gramine SGX only)",
    )
    serve.add_argument(
        "--max-batch-size",
        type=_bounded_int(1, 256),
        default=32,
        help="hub-model dynamic batching: most embeddings per run (1 turns it off; default 32)",
    )
    serve.add_argument(
        "--max-queue-delay-ms",
        type=_bounded_float(0.0, 1000.0),
        default=0.0,
        help="longest a request waits for a batch to fill (default 0: never waits)",
    )
    serve.add_argument(
        "--hub-models",
        type=_names,
        default=(),
        metavar="NAME,...",
        help="serve the bundle's model network: models by name or kind, e.g. "
        "generalist,small,wide,specialists (default: the hub model alone; "
        "docs/model-network.md)",
    )
    serve.add_argument(
        "--route-max-price",
        type=_bounded_float(0.0, 1e9),
        default=None,
        help="meta-router budget: most declared price per 1000 answers (default: none)",
    )
    serve.add_argument(
        "--route-max-model-ms",
        type=_bounded_float(0.0, 1e6),
        default=None,
        help="meta-router budget: most hub model time per answer, ms (default: none)",
    )
    serve.add_argument(
        "--route-exploration",
        type=_bounded_float(0.0, 1.0),
        default=None,
        help="meta-router exploration rate (default: the bundle's, 0.05)",
    )
    serve.add_argument(
        "--hub-price",
        type=_bounded_float(0.0, 1e9),
        default=1.0,
        help="declared price per 1000 answers of the hub model alone (default 1.0)",
    )
    serve.add_argument(
        "--audit-rate",
        type=_bounded_float(0.0, 1.0),
        default=0.0,
        help="share of answered escalations audited by re-encoding: the device reveals that "
        "input to the enclave (default 0: off; docs/provenance.md)",
    )
    serve.add_argument(
        "--audit-deadline-s",
        type=_bounded_float(1.0, 86400.0),
        default=120.0,
        help="how long a device has to reveal an audited input before it is quarantined",
    )
    serve.add_argument(
        "--advertise-url",
        default=None,
        help="URL agents reach this replica at, in the shared replica list "
        "(default: the one it listens on)",
    )
    serve.add_argument(
        "--replica-heartbeat-s",
        type=_bounded_float(0.05, 60.0),
        default=2.0,
        help="how often this replica renews its entry in the replica table (default 2)",
    )
    serve.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default auto: uvloop when installed)",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="create the database or bring its schema up to date first (a hub whose "
        "database only it can reach: the enclave's sealed one)",
    )
    serve.add_argument("--ready", action="store_true", help="print 'READY <url>' when listening")
    serve.add_argument(
        "--release-key",
        action="append",
        default=None,
        help="pinned bundle release public key, hex or .pub file (repeatable; docs/models.md)",
    )
    serve.add_argument(
        "--no-advertise", action="store_true", help="do not announce the hub on the LAN (mDNS)"
    )
    serve.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        help="announce on this interface (repeatable; default: the system's default one)",
    )
    serve.add_argument("--mdns-ipv6", action="store_true", help="announce over IPv6 as well")
    serve.set_defaults(func=cmd_serve)


def _advertise(args: argparse.Namespace) -> AdvertiseSettings | None:
    if args.no_advertise:
        return None
    return AdvertiseSettings(
        host=args.host, interfaces=tuple(args.mdns_interface), ipv6=args.mdns_ipv6
    )


def _add_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = _with_store_args(
        sub.add_parser("migrate", help="create the database, or bring its schema up to date")
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="only say whether the schema is current (exit 1 if not)",
    )
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(func=cmd_migrate)

    tokens = sub.add_parser(
        "tokens", help="enrollment tokens, host-local (over HTTP: `admin tokens`)"
    ).add_subparsers(dest="tokens_command", required=True)
    create = _with_store_args(tokens.add_parser("create", help="create a one-time token"))
    create.add_argument(
        "--ttl-hours", default="24", help="validity in hours (default 24; 1 minute to a year)"
    )
    create.add_argument("--note", default="")
    create.add_argument(
        "--uses", type=int, default=1, help="how many devices may enroll with it (default 1)"
    )
    create.add_argument(
        "--manual-approval",
        action="store_true",
        help="its devices wait, pending, until `devices approve` (default: active at once)",
    )
    create.add_argument("--quiet", action="store_true", help="print the token alone")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_token_create)

    devices = sub.add_parser(
        "devices", help="enrolled devices, host-local (over HTTP: `admin devices`)"
    ).add_subparsers(dest="devices_command", required=True)
    listing = _with_store_args(devices.add_parser("list", help="devices, status and reason"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_devices_list)
    for name, helptext, func in (
        ("approve", "approve a pending device", cmd_devices_approve),
        ("release", "release a quarantined device", cmd_devices_release),
        ("revoke", "revoke a device for good", cmd_devices_revoke),
    ):
        p = _with_store_args(devices.add_parser(name, help=helptext))
        p.add_argument("device_id")
        p.add_argument("--reason", default=f"{name} by operator")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)


def _add_admin_access(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = _with_store_args(
        sub.add_parser(
            "create-admin-token", help="make an admin API token (shown once; host-local)"
        )
    )
    admin.add_argument(
        "--scopes",
        nargs="+",
        default=[s.value for s in Scope],
        help="admin:read and/or admin:write (default both)",
    )
    admin.add_argument("--ttl-hours", default=None, help="validity in hours (default: no expiry)")
    admin.add_argument("--note", default="")
    admin.add_argument("--json", action="store_true")
    admin.set_defaults(func=cmd_create_admin_token)

    audit = sub.add_parser(
        "audit", help="the audit log, host-local (over HTTP: `admin audit`)"
    ).add_subparsers(dest="audit_command", required=True)
    verify = _with_store_args(
        audit.add_parser("verify", help="check the hash chain (exit 1 if broken)")
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_audit_verify)


def _add_enclave(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enclave = sub.add_parser("enclave", help="run the hub in an SGX enclave").add_subparsers(
        dest="enclave_command", required=True
    )
    render = enclave.add_parser("render", help="write the Gramine manifest template for the hub")
    render.add_argument("--models", required=True, help="model bundle directory (trusted files)")
    render.add_argument(
        "--data-dir", required=True, help="host directory for the enclave-sealed hub state"
    )
    render.add_argument("--out", required=True, help="manifest template to write")
    render.add_argument("--host", default="0.0.0.0")  # noqa: S104 (the enclave serves the network)
    render.add_argument("--port", type=int, default=8443)
    render.add_argument("--collateral", default=None, help="DCAP collateral JSON to pass on")
    render.add_argument("--enclave-size", default="2G")
    render.add_argument("--max-threads", type=int, default=32)
    render.add_argument("--isv-prod-id", type=int, default=0)
    render.add_argument("--isv-svn", type=int, default=0)
    render.set_defaults(func=cmd_enclave_render)


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names, comma-separated")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-hub", description="Escalade cloud hub")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_admin(sub)
    _add_admin_access(sub)
    add_admin_commands(sub)
    _add_enclave(sub)
    lan = sub.add_parser("lan-devices", help="list devices announcing themselves on the LAN")
    lan_devices.add_arguments(lan)
    lan.set_defaults(func=lan_devices.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Alembic says "Context impl SQLiteImpl." on every schema check; `migrate` reports itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return run_command(
        build_parser(),
        argv,
        expected=(
            HubError,
            BundleError,
            ReferenceStatsError,
            eventloop.EventLoopUnavailable,
            AdminCallError,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
