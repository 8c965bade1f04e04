"""The hub's Gramine manifest: valid TOML, production settings, and nothing untrusted imported.

Gramine itself is not installed here, so the enclave is never started. What is checked instead:
the rendered template parses as TOML (before and after the expansion gramine-manifest does),
it asks for a production DCAP enclave with sealed state, and a real hub, started with exactly
the manifest's interpreter, flags and environment, reads code only from trusted files.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from cloud_hub.cli import build_parser
from cloud_hub.enclave import EnclaveLayout, current_layout, render_manifest, trusted_files
from cloud_hub.enclave.manifest import (
    ENCLAVE_DATA_DIR,
    GRAMINE_LIBOS,
    GRAMINE_RUNTIMEDIR,
    SEALING_KEY,
    hub_argv,
)

HUB_START_TIMEOUT_S = 30.0

# Started with the manifest's interpreter and environment: records, at exit, every module file
# the hub imported and every file mapped into its memory (shared libraries).
PROBE = """
import atexit, json, runpy, sys

def dump(out=sys.argv[1]):
    modules = sorted({
        m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
    })
    with open("/proc/self/maps") as maps:
        fields = [line.split(None, 5) for line in maps]
    mapped = sorted({f[5].strip() for f in fields if len(f) == 6 and f[5].startswith("/")})
    with open(out, "w") as sink:
        json.dump({"modules": modules, "mapped": mapped, "prefix": sys.prefix}, sink)

atexit.register(dump)
sys.argv = ["cloud-hub", *sys.argv[2:]]
runpy.run_module("cloud_hub.cli", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def layout(bundle_dir: Path, tmp_path: Path) -> EnclaveLayout:
    return current_layout(bundle_dir, data_host_dir=tmp_path / "sealed")


@pytest.fixture
def manifest(layout: EnclaveLayout) -> dict[str, Any]:
    return tomllib.loads(render_manifest(layout))


def expand_like_gramine_manifest(text: str) -> str:
    """What gramine-manifest does to our output: expand Gramine's own expressions."""
    return text.replace(
        GRAMINE_RUNTIMEDIR, "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"
    ).replace(GRAMINE_LIBOS, "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so")


def trusted_roots(manifest: dict[str, Any]) -> list[str]:
    """Trusted URIs as host paths; directories end with '/'. Gramine's own entries left out."""
    return [
        uri.removeprefix("file:")
        for uri in trusted_files(manifest)
        if GRAMINE_RUNTIMEDIR not in uri and GRAMINE_LIBOS not in uri
    ]


def is_trusted(path: str, roots: list[str]) -> bool:
    """`path` (symlinks resolved, as /proc/self/maps names it) is a trusted file, or under a
    trusted directory. A trusted file is named as the loader opens it (`libz.so.1`, a symlink
    to `libz.so.1.2.13`): Gramine hashes what that name leads to."""
    return any(
        path.startswith(root) if root.endswith("/") else path in (root, os.path.realpath(root))
        for root in roots
    )


def enclave_view(env: dict[str, str], layout: EnclaveLayout, view: Path) -> dict[str, str]:
    """The manifest's environment (Gramine passes no host variables), with each site-packages
    directory on PYTHONPATH replaced by a directory holding only what the manifest mounts
    from it, as the enclave sees it."""
    if not layout.site_entries:
        return env
    view.mkdir()
    for entry in layout.site_entries:
        (view / entry.name).symlink_to(entry)
    sites = {str(site) for site in layout.site_packages}
    paths = env["PYTHONPATH"].split(":")
    env["PYTHONPATH"] = ":".join(str(view) if path in sites else path for path in paths)
    return env


def test_production_dcap_enclave(manifest: dict[str, Any], layout: EnclaveLayout) -> None:
    sgx = manifest["sgx"]
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["debug"] is False
    assert sgx["file_check_policy"] == "strict"
    assert sgx["enclave_size"] == "2G"
    assert sgx["max_threads"] == 32
    assert (sgx["isvprodid"], sgx["isvsvn"]) == (0, 0)
    assert sgx["allowed_files"] == []
    assert manifest["loader"]["log_level"] == "error"


def test_entrypoint_and_fixed_command_line(manifest: dict[str, Any], layout: EnclaveLayout) -> None:
    interpreter = str(Path(sys.executable).resolve())
    assert manifest["libos"]["entrypoint"] == interpreter
    argv = manifest["loader"]["argv"]
    assert argv == hub_argv(layout)
    assert argv[:5] == [interpreter, "-S", "-m", "cloud_hub.cli", "serve"]
    # The hub's CLI accepts the arguments as rendered.
    args = build_parser().parse_args(argv[4:])
    assert args.command == "serve"
    assert Path(args.models) == layout.models_dir
    assert Path(args.data_dir) == ENCLAVE_DATA_DIR
    assert not args.allow_simulated_tee
    assert args.seal_keys, "the enclave keeps its keys, sealed to its MRENCLAVE"
    loader = manifest["loader"]
    assert "insecure__use_cmdline_argv" not in loader
    assert "insecure__use_host_env" not in loader
    assert "argv_src_file" not in loader
    assert all(isinstance(value, str) for value in loader["env"].values()), "no passthrough"
    assert loader["env"]["PYTHONHOME"] == str(Path(sys.base_prefix).resolve())


def test_state_is_sealed_to_mrenclave(manifest: dict[str, Any], layout: EnclaveLayout) -> None:
    mounts = {mount["path"]: mount for mount in manifest["fs"]["mounts"]}
    state = mounts[str(ENCLAVE_DATA_DIR)]
    assert state == {
        "type": "encrypted",
        "path": str(ENCLAVE_DATA_DIR),
        "uri": f"file:{layout.data_host_dir}",
        "key_name": SEALING_KEY,
    }
    assert SEALING_KEY == "_sgx_mrenclave"
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert mounts["/lib"]["uri"] == f"file:{GRAMINE_RUNTIMEDIR}"
    # Mounts come parents first, so nested ones land inside their parents.
    depths = [len(PurePosixPath(mount["path"]).parts) for mount in manifest["fs"]["mounts"]]
    assert depths == sorted(depths)


def test_output_is_a_valid_template_for_gramine_manifest(layout: EnclaveLayout) -> None:
    text = render_manifest(layout)
    assert text == render_manifest(layout), "rendering is deterministic"
    # Only Gramine's own expressions remain for gramine-manifest's Jinja, and only in strings.
    leftovers = text.replace(GRAMINE_RUNTIMEDIR, "").replace(GRAMINE_LIBOS, "")
    assert not re.search(r"\{\{|\{%|\{#|\$", leftovers)
    parsed = tomllib.loads(expand_like_gramine_manifest(text))
    assert "file:/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/" in trusted_files(parsed)


def test_model_bundle_is_trusted(manifest: dict[str, Any], bundle_dir: Path) -> None:
    roots = trusted_roots(manifest)
    files = [path for path in bundle_dir.resolve().rglob("*") if path.is_file()]
    assert files
    assert all(is_trusted(str(path), roots) for path in files)


def test_every_file_the_hub_loads_is_trusted(
    manifest: dict[str, Any], layout: EnclaveLayout, bundle_dir: Path, tmp_path: Path
) -> None:
    """Run a real hub the way the manifest starts it, then look at what it loaded."""
    loader = manifest["loader"]
    interpreter, *flags = loader["argv"][: loader["argv"].index("-m")]
    dump = tmp_path / "loaded.json"
    command = [
        interpreter,
        *flags,
        "-c",
        PROBE,
        str(dump),
        "serve",
        "--models",
        str(bundle_dir),
        "--data-dir",
        str(tmp_path / "state"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--allow-simulated-tee",
        # As the manifest starts it: the hub creates its sealed database itself.
        "--migrate",
        "--ready",
    ]
    log = tmp_path / "hub.log"
    env = enclave_view(dict(loader["env"]), layout, tmp_path / "site-view")
    with (
        log.open("wb") as stderr,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path
        ) as hub,
    ):
        try:
            assert hub.stdout is not None
            ready, _, _ = select.select([hub.stdout], [], [], HUB_START_TIMEOUT_S)
            line = hub.stdout.readline().decode() if ready else ""
            assert line.startswith("READY "), f"hub did not start: {log.read_text()[-2000:]}"
            url = line.split()[1]
            with urllib.request.urlopen(f"{url}/v1/health", timeout=10) as response:
                assert response.status == 200
            request = urllib.request.Request(
                f"{url}/v1/attestation",
                data=json.dumps({"nonce": os.urandom(32).hex()}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            hub.send_signal(signal.SIGTERM)
            assert hub.wait(timeout=HUB_START_TIMEOUT_S) == 0, log.read_text()[-2000:]
        finally:
            if hub.poll() is None:
                hub.kill()
    loaded = json.loads(dump.read_text())
    assert Path(loaded["prefix"]).resolve() == Path(sys.base_prefix).resolve()
    roots = trusted_roots(manifest)
    # Through the view's symlinks, back to the host paths that the manifest trusts.
    modules = [os.path.realpath(path) for path in loaded["modules"]]
    assert len(modules) > 100
    assert any(path.endswith("cloud_hub/escalation/service.py") for path in modules)
    assert any("/onnxruntime/" in path for path in modules)
    untrusted = [path for path in modules if not is_trusted(path, roots)]
    assert untrusted == [], "modules outside sgx.trusted_files"
    libraries = [path for path in loaded["mapped"] if not path.startswith("/dev/")]
    assert manifest["libos"]["entrypoint"] in libraries
    libpython = {path for path in libraries if "/libpython" in path}
    if layout.python_libraries:  # the interpreter's own, not a look-alike from the system
        assert libpython == {str(path) for path in layout.python_libraries}
    untrusted = [path for path in libraries if not is_trusted(path, roots)]
    assert untrusted == [], "mapped files outside sgx.trusted_files"


def test_collateral_is_an_allowed_file(bundle_dir: Path, tmp_path: Path) -> None:
    collateral = tmp_path / "collateral.json"
    layout = current_layout(bundle_dir, data_host_dir=tmp_path / "sealed", collateral=collateral)
    manifest = tomllib.loads(render_manifest(layout))
    assert manifest["sgx"]["allowed_files"] == [f"file:{collateral}"]
    assert not is_trusted(str(collateral), trusted_roots(manifest))
    mounts = {mount["path"]: mount for mount in manifest["fs"]["mounts"]}
    assert mounts[str(collateral)]["uri"] == f"file:{collateral}"
    args = build_parser().parse_args(manifest["loader"]["argv"][4:])
    assert Path(args.collateral) == collateral


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models_dir": Path("models")}, "absolute"),
        ({"models_dir": Path("/srv/{{ evil }}")}, "template marker"),
        ({"hub_args": ["--models", "{% include x %}"]}, "template marker"),
        ({"enclave_size": "2 GB"}, "enclave_size"),
        ({"max_threads": 2}, "max_threads"),
        ({"isv_svn": 70000}, "16 bits"),
        ({"log_level": "verbose"}, "log_level"),
        ({"models_dir": Path("/tmp")}, "reserves"),
        ({"data_dir": Path("/")}, "reserves"),
        ({"site_packages": []}, "site_packages"),
        ({"sealing_key": "default"}, "sealing_key"),
    ],
)
def test_rejects_bad_layouts(layout: EnclaveLayout, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_manifest(replace(layout, **change))


def test_models_inside_the_sealed_state_are_rejected(layout: EnclaveLayout) -> None:
    with pytest.raises(ValueError, match="overlaps data_host_dir"):
        render_manifest(replace(layout, data_host_dir=layout.models_dir.parent))


def test_render_works_from_the_installed_cli_outside_the_source_tree(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The editable install's packages are on no sys.path entry there; that used to exit 2."""
    out = tmp_path / "hub.manifest.template"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_hub.cli",
            "enclave",
            "render",
            "--models",
            str(bundle_dir),
            "--data-dir",
            str(tmp_path / "sealed"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert tomllib.loads(out.read_text())["sgx"]["remote_attestation"] == "dcap"


def test_only_the_hub_closure_is_trusted(manifest: dict[str, Any], layout: EnclaveLayout) -> None:
    roots = trusted_roots(manifest)
    names = {Path(root.rstrip("/")).name for root in roots}
    assert {"numpy", "onnxruntime", "cryptography", "aiohttp", "pydantic", "sqlalchemy"} <= names
    # Test and build tools in the same venv, and the interpreter's own site-packages, are not.
    assert not names & {"pytest", "mypy", "ruff", "sklearn", "hypothesis", "site-packages"}
    assert not any(root.rstrip("/") == str(site) for site in layout.site_packages for root in roots)
    assert not any("/test/" in root for root in roots if root.startswith(str(layout.python_stdlib)))
    files = sum(
        sum(len(found) for _, _, found in os.walk(root)) if root.endswith("/") else 1
        for root in roots
    )
    assert files < 20_000  # whole site-packages directories: 60,000 and more
    assert manifest["loader"]["argv"][1] == "-S"


def test_system_libraries_are_trusted_by_file(
    manifest: dict[str, Any], layout: EnclaveLayout
) -> None:
    """The loader's closure, not /usr/lib/<multiarch> whole (1,100 files, 1.7 GB here)."""
    if not layout.system_lib_dirs:
        pytest.skip("no multiarch system library directory on this interpreter")
    roots = trusted_roots(manifest)
    assert not {root.rstrip("/") for root in roots} & {str(d) for d in layout.system_lib_dirs}
    names = {Path(lib).name for lib in layout.system_libraries}
    assert f"file:{layout.system_libraries[0]}" in trusted_files(manifest)
    assert "libstdc++.so.6" in names  # ONNX Runtime's C++ runtime
    assert not any(name.startswith(("libX11", "libtk", "libtcl")) for name in names)
    assert len(names) < 100
    for lib in layout.system_libraries:
        # Named as the enclave's loader opens it: in a system directory on LD_LIBRARY_PATH.
        assert str(lib.parent) in manifest["loader"]["env"]["LD_LIBRARY_PATH"].split(":")
