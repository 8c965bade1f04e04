"""`cloud-hub admin bundles ...` and `cloud-hub admin rollouts ...`, over the admin API.

cloud-hub admin bundles upload BUNDLE_DIR          # tar it, upload it, print its digest
cloud-hub admin rollouts create --bundle DIGEST --percent 1 [--profile P]
cloud-hub admin rollouts create --bundle DIGEST --devices ID,ID
cloud-hub admin rollouts advance ID [--percent 10]  # default: 1 -> 10 -> 100
cloud-hub admin rollouts pause|resume|rollback ID
cloud-hub admin rollouts get ID | list | devices
"""

from __future__ import annotations

import argparse
import io
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from cloud_hub.admin.client import PREFIX, AdminCallError, AdminClient, dumps
from cloud_hub.admin.rollout_models import (
    BundleList,
    BundleOut,
    DeviceModelList,
    RolloutAdvance,
    RolloutChange,
    RolloutCreate,
    RolloutDetail,
    RolloutList,
    RolloutOut,
)
from cloud_hub.admin.rollouts import TAR
from cloud_hub.rollouts import AutoAdvance

if TYPE_CHECKING:
    from cloud_hub.admin.cli import Group, Leaf


class RolloutClient(AdminClient):
    """The admin client's bundle and rollout calls."""

    @classmethod
    def of(cls, client: AdminClient) -> RolloutClient:
        return cls(client.base.removesuffix(PREFIX), client.token, timeout_s=client.timeout_s)

    def upload_bundle(self, archive: bytes, note: str) -> BundleOut:
        query = {"note": note} if note else None
        return self._call("POST", "/bundles", BundleOut, raw_body=(archive, TAR), query=query)

    def list_bundles(self) -> BundleList:
        return self._call("GET", "/bundles", BundleList)

    def create_rollout(self, body: RolloutCreate) -> RolloutOut:
        return self._call("POST", "/rollouts", RolloutOut, body=body)

    def list_rollouts(self) -> RolloutList:
        return self._call("GET", "/rollouts", RolloutList)

    def get_rollout(self, rollout_id: int) -> RolloutDetail:
        return self._call("GET", f"/rollouts/{rollout_id}", RolloutDetail)

    def advance_rollout(self, rollout_id: int, body: RolloutAdvance) -> RolloutOut:
        return self._call("POST", f"/rollouts/{rollout_id}/advance", RolloutOut, body=body)

    def change_rollout(self, rollout_id: int, action: str, body: RolloutChange) -> RolloutOut:
        return self._call("POST", f"/rollouts/{rollout_id}/{action}", RolloutOut, body=body)

    def device_models(self) -> DeviceModelList:
        return self._call("GET", "/device-models", DeviceModelList)


def tar_bundle(bundle_dir: Path) -> bytes:
    """The bundle directory as an uncompressed tar archive (what POST /bundles takes)."""
    if not bundle_dir.is_dir():
        raise AdminCallError(f"{bundle_dir} is not a bundle directory")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(bundle_dir)))
    return out.getvalue()


def _model(make: Callable[[], object]) -> object:
    try:
        return make()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AdminCallError(f"{where + ': ' if where else ''}{first['msg']}") from None


def _rollout_line(r: RolloutOut) -> str:
    target = (
        f"{len(r.devices)} named devices"
        if r.devices is not None
        else f"{r.percent:g}%" + (f" of {r.profile}" if r.profile else "")
    )
    return f"rollout {r.rollout_id}: bundle {r.bundle_digest[:16]} to {target}, {r.state}"


def bundles_upload(args: argparse.Namespace, client: AdminClient) -> int:
    archive = tar_bundle(Path(args.bundle).expanduser())
    found = RolloutClient.of(client).upload_bundle(archive, args.note)
    signed = f"signed by {found.signer}" if found.signer else "unsigned (no release key pinned)"
    text = f"bundle {found.digest} ({found.model_id} v{found.model_version}, {signed})"
    print(dumps(found) if args.json else text)
    return 0


def bundles_list(args: argparse.Namespace, client: AdminClient) -> int:
    listed = RolloutClient.of(client).list_bundles()
    if args.json:
        print(dumps(listed))
    for b in [] if args.json else listed.items:
        print(f"{b.digest}  {b.model_id} v{b.model_version}  {b.signer or 'unsigned'}")
    return 0


def rollouts_create(args: argparse.Namespace, client: AdminClient) -> int:
    try:
        devices = [uuid.UUID(d) for d in args.devices.split(",")] if args.devices else None
    except ValueError:
        raise AdminCallError(f"--devices: not a list of device ids: {args.devices}") from None
    body = _model(
        lambda: RolloutCreate(
            bundle_digest=args.bundle,
            devices=devices,
            profile=args.profile,
            percent=args.percent,
            note=args.note,
            auto=AutoAdvance(min_outcomes=args.auto_min_outcomes) if args.auto else None,
        )
    )
    assert isinstance(body, RolloutCreate)
    created = RolloutClient.of(client).create_rollout(body)
    print(dumps(created) if args.json else _rollout_line(created))
    return 0


def rollouts_list(args: argparse.Namespace, client: AdminClient) -> int:
    listed = RolloutClient.of(client).list_rollouts()
    print(dumps(listed) if args.json else "\n".join(_rollout_line(r) for r in listed.items))
    return 0


def rollouts_get(args: argparse.Namespace, client: AdminClient) -> int:
    detail = RolloutClient.of(client).get_rollout(args.rollout_id)
    if args.json:
        print(dumps(detail))
        return 0
    t = detail.tally
    print(
        f"{_rollout_line(detail.rollout)}: {t.assigned} assigned, {t.running} running it, "
        f"{t.pending} pending, {t.rolled_back} rolled back, {t.refused} refused"
    )
    for d in detail.devices:
        print(f"  {d.device_id}  {d.state or 'not reported'}  {(d.bundle_digest or '-')[:16]}")
    return 0


def rollouts_advance(args: argparse.Namespace, client: AdminClient) -> int:
    body = _model(lambda: RolloutAdvance(percent=args.percent))
    assert isinstance(body, RolloutAdvance)
    changed = RolloutClient.of(client).advance_rollout(args.rollout_id, body)
    print(dumps(changed) if args.json else _rollout_line(changed))
    return 0


def _state_command(action: str) -> Callable[[argparse.Namespace, AdminClient], int]:
    def run(args: argparse.Namespace, client: AdminClient) -> int:
        body = RolloutChange(reason=args.reason) if args.reason else RolloutChange()
        changed = RolloutClient.of(client).change_rollout(args.rollout_id, action, body)
        print(dumps(changed) if args.json else _rollout_line(changed))
        return 0

    return run


def rollouts_devices(args: argparse.Namespace, client: AdminClient) -> int:
    listed = RolloutClient.of(client).device_models()
    if args.json:
        print(dumps(listed))
        return 0
    for d in listed.items:
        running = (d.bundle_digest or "-")[:16]
        assigned = (d.assigned_digest or "installed")[:16]
        print(f"{d.device_id}  runs {running}  assigned {assigned}  {d.state or 'not reported'}")
    return 0


def add_rollout_commands(admin: Group, leaf: Leaf) -> None:
    bundles = admin.add_parser("bundles", help="signed model bundles").add_subparsers(
        dest="admin_bundles", required=True
    )
    up = leaf(bundles, "upload", "upload a bundle directory (checked by the hub)", bundles_upload)
    up.add_argument("bundle", help="the bundle directory (signed: escalade models sign)")
    up.add_argument("--note", default="")
    leaf(bundles, "list", "bundles the hub keeps", bundles_list)

    rollouts = admin.add_parser("rollouts", help="bundle rollouts").add_subparsers(
        dest="admin_rollouts", required=True
    )
    create = leaf(rollouts, "create", "assign a bundle to devices or a share", rollouts_create)
    create.add_argument("--bundle", required=True, help="the bundle's digest")
    create.add_argument("--devices", default=None, help="comma-separated device ids")
    create.add_argument("--percent", type=float, default=None, help="share of the fleet")
    create.add_argument("--profile", default=None, help="only devices of this profile")
    create.add_argument("--note", default="")
    create.add_argument(
        "--auto", action="store_true", help="advance by itself within the default bounds"
    )
    create.add_argument("--auto-min-outcomes", type=int, default=200, help="answers per stage")
    leaf(rollouts, "list", "rollouts, oldest first", rollouts_list)
    get = leaf(rollouts, "get", "a rollout, its devices and what they run", rollouts_get)
    get.add_argument("rollout_id", type=int)
    advance = leaf(rollouts, "advance", "widen a rollout (1 -> 10 -> 100)", rollouts_advance)
    advance.add_argument("rollout_id", type=int)
    advance.add_argument("--percent", type=float, default=None)
    for action in ("pause", "resume", "rollback"):
        p = leaf(rollouts, action, f"{action} a rollout", _state_command(action))
        p.add_argument("rollout_id", type=int)
        p.add_argument("--reason", default=None)
    leaf(rollouts, "devices", "every device's reported model and assignment", rollouts_devices)
