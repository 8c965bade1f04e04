"""`cloud-hub`: serve, migrate, and enrollment tokens."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from cloud_hub.app import build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.enrollment import create_token
from cloud_hub.errors import HubError
from cloud_hub.store import Store, sqlite_url
from escalade_protocol.artifacts import BundleError


def _data_dir(path: str) -> Path:
    data_dir = Path(path).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return data_dir


def _store(args: argparse.Namespace) -> Store:
    return Store.open(args.database_url or sqlite_url(_data_dir(args.data_dir)))


async def _serve(config: HubConfig) -> None:
    state = build_state(config)
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    url = f"http://{config.host}:{runner.addresses[0][1]}"
    logging.getLogger("cloud_hub").info(
        "hub listening on %s, model %s v%d, hub key %s",
        url,
        state.model.info.model_id,
        state.model.info.model_version,
        state.identity.key_id.hex(),
    )
    if config.announce_ready:
        print(f"READY {url}", flush=True)
    stop = asyncio.Event()
    # SIGTERM stops the service cleanly: open requests finish, state is closed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    config = HubConfig(
        data_dir=_data_dir(args.data_dir),
        models_dir=Path(args.models).expanduser(),
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        allow_simulated_tee=args.allow_simulated_tee,
        attestation_dir=Path(args.attestation_dir),
        collateral_file=Path(args.collateral) if args.collateral else None,
        pccs_url=args.pccs_url,
        announce_ready=args.ready,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _store(args).close()
    print("database schema is up to date")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        token, expires = create_token(store, ttl=timedelta(hours=args.ttl_hours), note=args.note)
    finally:
        store.close()
    if args.quiet:
        print(token)
    else:
        print(f"enrollment token (shown once, valid until {expires.isoformat()}):\n{token}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-hub", description="Escalade cloud hub")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", default="./hub-data", help="state directory (default ./hub-data)"
        )
        p.add_argument(
            "--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)"
        )

    serve = sub.add_parser("serve", help="run the hub")
    common(serve)
    serve.add_argument("--models", required=True, help="model bundle directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    serve.add_argument(
        "--allow-simulated-tee",
        action="store_true",
        help="serve INSECURE simulated attestation evidence (development only)",
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
    serve.add_argument("--ready", action="store_true", help="print 'READY <url>' when listening")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    tokens = sub.add_parser("tokens", help="enrollment tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a one-time enrollment token")
    common(create)
    create.add_argument("--ttl-hours", type=float, default=24.0)
    create.add_argument("--note", default="")
    create.add_argument("--quiet", action="store_true", help="print the token alone")
    create.set_defaults(func=cmd_token_create)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except (HubError, BundleError) as exc:
        print(f"cloud-hub: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
