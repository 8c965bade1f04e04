"""`cloud-hub` as an operator meets it, as real processes: wrong paths and values are refused
with one line and exit 2, the hub serves only a migrated database, and its files are private."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from enrollment import enroll_request
from hubdb import migrated_data_dir
from sqlalchemy import text

from cloud_hub.admin import authenticate
from cloud_hub.audit import OperatorEvidence
from cloud_hub.enrollment import enroll
from cloud_hub.store import Store, schema_version, sqlite_url
from escalade.procs import module_command
from escalade_protocol.keys import Ed25519PrivateKey


def hub_cli(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        module_command("cloud_hub.cli", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=set_umask,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exit 2 and a single line on stderr (no traceback, no usage)."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloud-hub: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A migrated data dir (in this process: a CLI start costs seconds of CPU)."""
    return migrated_data_dir(tmp_path / "hub")


def test_migrate_creates_the_data_dir_and_reports_json(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    result = hub_cli("migrate", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["before"] == "empty"
    again = hub_cli("migrate", "--data-dir", str(data_dir), "--json")
    assert json.loads(again.stdout)["before"] == f"current {schema_version.head_revision()}"


@pytest.mark.parametrize(
    "command",
    [("tokens", "create"), ("devices", "list")],
)
def test_operator_commands_refuse_a_data_dir_that_does_not_exist(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    typo = tmp_path / "hub-dta"
    result = hub_cli(*command, "--data-dir", str(typo))
    one_line_error(result, "no hub data dir", "cloud-hub migrate")
    assert result.stdout == ""
    assert not typo.exists()


def test_operator_commands_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    tmp_path.joinpath("hub.db").touch()
    one_line_error(hub_cli("tokens", "create", "--data-dir", str(tmp_path)), "cloud-hub migrate")


@pytest.mark.parametrize("ttl", ["0", "-1", "1e9", "nan"])
def test_token_ttl_out_of_range_is_one_line_and_exit_2(hub_dir: Path, ttl: str) -> None:
    one_line_error(hub_cli("tokens", "create", "--data-dir", str(hub_dir), f"--ttl-hours={ttl}"))
    store = Store.open(sqlite_url(hub_dir))
    try:
        assert store.counts().tokens == 0
    finally:
        store.close()


def test_token_create_reports_json(hub_dir: Path) -> None:
    result = hub_cli("tokens", "create", "--data-dir", str(hub_dir), "--ttl-hours", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["token"].startswith("esc_enr_")


def test_migrate_check_says_whether_the_schema_is_current(hub_dir: Path, tmp_path: Path) -> None:
    current = hub_cli("migrate", "--check", "--json", "--data-dir", str(hub_dir))
    assert current.returncode == 0
    assert json.loads(current.stdout)["status"] == "current"
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.joinpath("hub.db").touch()
    behind = hub_cli("migrate", "--check", "--json", "--data-dir", str(empty))
    assert behind.returncode == 1
    assert json.loads(behind.stdout)["status"] == "empty"


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    assert hub_cli("migrate", "--data-dir", str(data_dir), umask=0).returncode == 0
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "hub.db") == 0o600
    # While a store is open, SQLite's -wal and -shm exist: they take the database's mode.
    old = os.umask(0)
    try:
        store = Store.open(sqlite_url(data_dir))
    finally:
        os.umask(old)
    try:
        assert store.counts().tokens == 0
        for name in ("hub.db-wal", "hub.db-shm"):
            assert mode(data_dir / name) == 0o600, name
    finally:
        store.close()


def test_an_existing_open_data_dir_and_database_are_made_private(hub_dir: Path) -> None:
    hub_dir.chmod(0o755)
    (hub_dir / "hub.db").chmod(0o644)
    assert hub_cli("devices", "list", "--data-dir", str(hub_dir), "--json").returncode == 0
    assert mode(hub_dir) == 0o700
    assert mode(hub_dir / "hub.db") == 0o600


def test_migrate_into_an_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(hub_cli("migrate", "--data-dir", str(blocker / "hub")), "cannot create")
    one_line_error(hub_cli("migrate", "--data-dir", str(blocker)), "not a directory")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def serve(hub_dir: Path, bundle_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hub_cli(
        "serve",
        "--data-dir",
        str(hub_dir),
        "--models",
        str(bundle_dir),
        "--allow-simulated-tee",
        *extra,
    )


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) cloud_hub")


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """serve logs its start-up (the simulated-evidence warning, the model); the error is the
    one line that is not a log line, and nothing else is printed (no traceback)."""
    assert result.returncode == 2, result
    return [line for line in result.stderr.splitlines() if not LOG_LINE.match(line)]


def test_serve_on_a_port_in_use_is_one_line(
    hub_dir: Path, bundle_dir: Path, taken_port: int
) -> None:
    (line,) = errors(serve(hub_dir, bundle_dir, "--port", str(taken_port)))
    assert line.startswith(f"cloud-hub: error: cannot listen on 127.0.0.1:{taken_port}")


def test_serve_refuses_an_unmigrated_database(tmp_path: Path, bundle_dir: Path) -> None:
    (line,) = errors(serve(tmp_path, bundle_dir, "--port", "0"))
    assert "no hub database" in line
    assert "cloud-hub migrate" in line
    tmp_path.joinpath("hub.db").touch()
    (line,) = errors(serve(tmp_path, bundle_dir, "--port", "0"))
    assert "has no hub schema" in line
    assert "cloud-hub migrate" in line


def test_serve_refuses_a_data_dir_that_is_a_file(tmp_path: Path, bundle_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (line,) = errors(serve(blocker, bundle_dir, "--port", "0"))
    assert "not a directory" in line


def test_create_admin_token_prints_it_alone_on_the_last_line(hub_dir: Path) -> None:
    result = hub_cli("create-admin-token", "--data-dir", str(hub_dir), "--scopes", "admin:read")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("esc_adm_")
    assert " " not in token
    store = Store.open(sqlite_url(hub_dir))
    try:
        found = authenticate(store, token)
        assert found is not None
        assert found.scopes == {"admin:read"}
        # Stored hashed: the token itself is nowhere in the database.
        assert token.encode() not in (hub_dir / "hub.db").read_bytes()
    finally:
        store.close()
    one_line_error(
        hub_cli("create-admin-token", "--data-dir", str(hub_dir), "--scopes", "root"), "--scopes"
    )


def test_a_manually_approved_device_waits_until_the_operator_approves(hub_dir: Path) -> None:
    created = hub_cli(
        "tokens", "create", "--data-dir", str(hub_dir), "--manual-approval", "--uses", "2", "--json"
    )
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    store = Store.open(sqlite_url(hub_dir))
    try:
        device_id = enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))
    finally:
        store.close()
    (row,) = json.loads(hub_cli("devices", "list", "--data-dir", str(hub_dir), "--json").stdout)
    assert row["status"] == "pending"
    approved = hub_cli("devices", "approve", str(device_id), "--data-dir", str(hub_dir), "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["status"] == "active"
    again = hub_cli("devices", "approve", str(device_id), "--data-dir", str(hub_dir))
    one_line_error(again, "is active")
    verified = hub_cli("audit", "verify", "--data-dir", str(hub_dir), "--json")
    assert verified.returncode == 0
    assert json.loads(verified.stdout)["entries"] == 2  # enroll, approve
    one_line_error(hub_cli("tokens", "create", "--data-dir", str(hub_dir), "--uses", "0"), "--uses")


def test_audit_verify_exits_1_naming_the_broken_entry(hub_dir: Path) -> None:
    store = Store.open(sqlite_url(hub_dir))
    try:
        for reason in ("a", "b"):
            store.add_audit_event(
                device_id=None,
                action="note",
                actor="operator",
                reason=reason,
                evidence=OperatorEvidence(),
            )
        with store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("UPDATE audit_events SET reason = 'forged' WHERE reason = 'a'"))
        first = store.audit_log()[0].id
    finally:
        store.close()
    result = hub_cli("audit", "verify", "--data-dir", str(hub_dir), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["first_broken"]["entry_id"] == first


def test_direct_database_commands_say_they_are_host_local() -> None:
    """`tokens`, `devices`, `audit` and `create-admin-token` open the database; `admin ...`
    is the administrator's way in, over HTTP."""
    result = hub_cli("--help")
    assert result.returncode == 0
    lines = {
        line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("    ")
    }
    for command in ("tokens", "devices", "audit", "create-admin-token"):
        assert "host-local" in lines[command], lines[command]
    assert "admin API (HTTP)" in lines["admin"]
