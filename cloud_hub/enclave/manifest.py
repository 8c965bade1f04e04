"""Render the Gramine manifest that runs `cloud-hub serve` inside an SGX enclave.

Two stages, so that each tool fills in what it knows:

1. `render_manifest` (this module, behind `cloud-hub enclave render`) fills the ``$``
   placeholders of ``cloud-hub.manifest.template`` with this installation's concrete paths (the
   interpreter, its standard library, the site-packages holding the hub's dependencies, the
   model bundle) and the hub's fixed command line. Its output is valid TOML in which Gramine's
   own template expressions (``gramine.runtimedir()``, ``gramine.libos``) remain, always inside
   quoted strings.
2. ``gramine-manifest`` expands those (it knows where Gramine is installed) and writes the final
   manifest for ``gramine-sgx-sign``.

Everything rendered here is measured into MRENCLAVE, so rendering is deterministic: the same
layout always gives the same text.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import re
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from pathlib import Path, PurePosixPath
from string import Template
from typing import Any, Final

from cloud_hub.enclave.closure import distribution_closure, trusted_entries
from cloud_hub.enclave.libraries import LddUnavailable, elf_objects, system_libraries

TEMPLATE_NAME: Final = "cloud-hub.manifest.template"
# Where the hub's state (SQLite database, device records) lives inside the enclave.
ENCLAVE_DATA_DIR: Final = Path("/hub-data")
# The key Gramine derives from the enclave's MRENCLAVE: only this exact enclave, on this
# platform, can read the state back. "_sgx_mrsigner" would let every enclave signed with the
# same key (later versions included) read it.
SEALING_KEY: Final = "_sgx_mrenclave"
SEALING_KEYS: Final = frozenset({"_sgx_mrenclave", "_sgx_mrsigner"})
# Gramine's patched C library and loader are mounted here (LD_LIBRARY_PATH searches it first).
GRAMINE_RUNTIMEDIR: Final = "{{ gramine.runtimedir() }}"
GRAMINE_LIBOS: Final = "{{ gramine.libos }}"
_GRAMINE_EXPRESSIONS: Final = (GRAMINE_RUNTIMEDIR, GRAMINE_LIBOS)
GRAMINE_RUNTIME_URI: Final = f"file:{GRAMINE_RUNTIMEDIR}"
GRAMINE_LIBOS_URI: Final = f"file:{GRAMINE_LIBOS}"
# The hub's own packages: each directory is trusted as a whole.
HUB_PACKAGES: Final = ("cloud_hub", "attestation", "escalade_protocol")
# Its direct dependencies; the sys.path entries that hold them (site-packages) are trusted as a
# whole, which also covers their own dependencies installed beside them.
HUB_DEPENDENCIES: Final = (
    "numpy",
    "onnxruntime",
    "cryptography",
    "aiohttp",
    "pydantic",
    "sqlalchemy",
)
# Parts of the standard library directory the hub never imports: the interpreter's own
# site-packages (tens of thousands of files, unreachable under -S), its test suite, the GUI
# and 2to3 tools. Everything else in it is trusted.
STDLIB_UNTRUSTED: Final = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
    }
)
# The static libpython and build files (`config-3.11-x86_64-linux-gnu`, 45 MB): only for
# compiling extensions.
STDLIB_UNTRUSTED_PREFIX: Final = "config-"

LOG_LEVELS: Final = frozenset({"none", "error", "warning", "debug", "trace", "all"})
# Mounted by the manifest itself: the root, Gramine's runtime, the in-enclave tmpfs.
_RESERVED_MOUNT_POINTS: Final = frozenset({Path("/"), Path("/lib"), Path("/tmp")})  # noqa: S108
_SIZE = re.compile(r"[1-9][0-9]*[KMG]")
# Jinja (gramine-manifest) would interpret these in anything we emit.
_JINJA_MARKERS: Final = ("{{", "{%", "{#")


@dataclass(frozen=True, kw_only=True)
class EnclaveLayout:
    """What goes into the enclave, with host paths mounted at the same paths inside."""

    python_executable: Path  # the real interpreter binary, symlinks resolved
    python_home: Path  # PYTHONHOME: sys.base_prefix
    python_stdlib: Path  # the standard library directory, trusted as a whole
    python_lib_dirs: list[Path] = field(default_factory=list)  # lib-dynload when outside stdlib
    python_libraries: list[Path] = field(default_factory=list)  # libpython*.so, when shared
    system_lib_dirs: list[Path] = field(default_factory=list)  # /lib/<multiarch>, /usr/lib/...
    # What in system_lib_dirs is trusted: the libraries the hub loads (libraries.py); empty
    # trusts the system_lib_dirs whole.
    system_libraries: list[Path] = field(default_factory=list)
    site_packages: list[Path]  # on PYTHONPATH and mounted
    # What inside site_packages is trusted: the hub's distribution closure (closure.py); empty
    # trusts the site_packages directories whole.
    site_entries: list[Path] = field(default_factory=list)
    hub_packages: list[Path] = field(default_factory=list)  # the hub's package directories
    models_dir: Path  # the model bundle, trusted as a whole
    # Readable without a hash check (sgx.allowed_files): only for data that carries its own
    # signature, such as Intel's DCAP collateral, which expires and is refreshed without
    # re-signing the enclave.
    allowed_files: list[Path] = field(default_factory=list)
    data_dir: Path = ENCLAVE_DATA_DIR  # the encrypted state directory, path inside the enclave
    data_host_dir: Path  # the host directory holding its ciphertext
    sealing_key: str = SEALING_KEY
    enclave_size: str = "2G"
    max_threads: int = 32
    isv_prod_id: int = 0
    isv_svn: int = 0
    log_level: str = "error"
    hub_args: list[str]  # after `python -m cloud_hub.cli serve`


def default_hub_args(
    *,
    models_dir: Path,
    data_dir: Path = ENCLAVE_DATA_DIR,
    host: str = "0.0.0.0",  # noqa: S104 - the hub serves the network; payloads are sealed
    port: int = 8443,
    extra: Iterable[str] = (),
) -> list[str]:
    return [
        "--models",
        str(models_dir),
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
        # The sealed database can be reached only from inside the enclave, so the hub there
        # creates and migrates it itself (elsewhere an operator runs `cloud-hub migrate`).
        "--migrate",
        # Its keys survive a restart of this same enclave (MRENCLAVE-sealed, docs/attestation.md).
        "--seal-keys",
        *extra,
    ]


def _is_under(path: PurePosixPath | Path, root: PurePosixPath | Path) -> bool:
    return path == root or root in path.parents


def _import_root(module: str) -> tuple[Path, Path]:
    """(the package directory or module file, the sys.path entry it was found in)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"cannot find the installed module {module!r}")
    origin = Path(spec.origin).resolve()
    located = origin.parent if spec.submodule_search_locations is not None else origin
    candidates = [Path(entry or ".").resolve() for entry in sys.path]
    containing = [entry for entry in candidates if _is_under(located, entry) and located != entry]
    if not containing:
        raise LookupError(f"{module!r} at {located} is not under any sys.path entry")
    return located, max(containing, key=lambda entry: len(entry.parts))


def _package_dir(module: str) -> Path:
    """Where a package's files are, however it is found: an editable install's import hook
    maps it to a source tree that is on no sys.path entry (the enclave puts its parent on
    PYTHONPATH)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"cannot find the installed module {module!r}")
    origin = Path(spec.origin).resolve()
    return origin.parent if spec.submodule_search_locations is not None else origin


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def current_layout(
    models_dir: Path,
    *,
    data_host_dir: Path,
    data_dir: Path = ENCLAVE_DATA_DIR,
    host: str = "0.0.0.0",  # noqa: S104 - see default_hub_args
    port: int = 8443,
    collateral: Path | None = None,
    extra_hub_args: Iterable[str] = (),
    enclave_size: str = "2G",
    max_threads: int = 32,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    sealing_key: str = SEALING_KEY,
) -> EnclaveLayout:
    """The layout of the running interpreter and the installed hub, for this models dir."""
    config = sysconfig.get_config_var
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    lib_dirs = []
    dynload = config("DESTSHARED")
    if dynload and not _is_under(Path(dynload).resolve(), stdlib):
        lib_dirs.append(Path(dynload).resolve())
    libraries = []
    if config("Py_ENABLE_SHARED") and config("LIBDIR") and config("INSTSONAME"):
        libpython = Path(config("LIBDIR")) / config("INSTSONAME")
        if libpython.exists():
            libraries.append(libpython)
    multiarch = config("MULTIARCH")  # e.g. x86_64-linux-gnu
    system_lib_dirs = [
        path
        for path in ([Path("/lib") / multiarch, Path("/usr/lib") / multiarch] if multiarch else [])
        if path.is_dir()
    ]
    site_packages = _unique(_import_root(module)[1] for module in HUB_DEPENDENCIES)
    hub_packages = [_package_dir(name) for name in HUB_PACKAGES]
    try:
        site_entries = trusted_entries(distribution_closure())
    except PackageNotFoundError:  # run from a source tree without installing: trust it all
        site_entries = []
    objects = elf_objects(
        [
            Path(sys.executable).resolve(),
            *libraries,
            stdlib / "lib-dynload",
            *lib_dirs,
            *(site_entries or site_packages),
        ]
    )
    # tkinter is untrusted, so its extension's X11 and Tcl/Tk libraries need not be trusted.
    objects = [path for path in objects if not path.name.startswith("_tkinter")]
    try:
        libraries_loaded = system_libraries(objects, system_lib_dirs)
    except LddUnavailable:
        libraries_loaded = []
    models = models_dir.expanduser().resolve()
    extra = list(extra_hub_args)
    allowed = []
    if collateral is not None:
        allowed.append(collateral.expanduser().resolve())
        extra += ["--collateral", str(allowed[0])]
    return EnclaveLayout(
        python_executable=Path(sys.executable).resolve(),
        python_home=Path(sys.base_prefix).resolve(),
        python_stdlib=stdlib,
        python_lib_dirs=lib_dirs,
        python_libraries=libraries,
        system_lib_dirs=system_lib_dirs,
        system_libraries=libraries_loaded,
        site_packages=site_packages,
        site_entries=site_entries,
        hub_packages=hub_packages,
        models_dir=models,
        allowed_files=allowed,
        data_dir=data_dir,
        data_host_dir=data_host_dir.expanduser().resolve(),
        enclave_size=enclave_size,
        max_threads=max_threads,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        sealing_key=sealing_key,
        hub_args=default_hub_args(
            models_dir=models, data_dir=data_dir, host=host, port=port, extra=extra
        ),
    )


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's string escapes are a subset of TOML's).

    Gramine's own expressions are the only template markers allowed through: anything else
    would be interpreted by gramine-manifest's Jinja.
    """
    bare = value
    for expression in _GRAMINE_EXPRESSIONS:
        bare = bare.replace(expression, "")
    if any(marker in bare for marker in _JINJA_MARKERS):
        raise ValueError(f"{value!r} contains a template marker ({{{{, {{% or {{#)")
    return json.dumps(value, ensure_ascii=False)


def _check_settings(layout: EnclaveLayout) -> None:
    if not layout.site_packages:
        raise ValueError("site_packages: at least one directory is needed")
    if not _SIZE.fullmatch(layout.enclave_size):
        raise ValueError(f"enclave_size {layout.enclave_size!r}: expected e.g. '2G' or '512M'")
    if layout.max_threads < 4:
        raise ValueError("max_threads: Gramine needs at least 4 (it has helper threads)")
    for name, value in (("isv_prod_id", layout.isv_prod_id), ("isv_svn", layout.isv_svn)):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{name} must fit in 16 bits, got {value}")
    if layout.sealing_key not in SEALING_KEYS:
        raise ValueError(f"sealing_key {layout.sealing_key!r} is not one of {sorted(SEALING_KEYS)}")
    if layout.log_level not in LOG_LEVELS:
        raise ValueError(f"log_level {layout.log_level!r} is not one of {sorted(LOG_LEVELS)}")


def _check_paths(layout: EnclaveLayout) -> None:
    mounted = {
        "python_executable": [layout.python_executable],
        "python_stdlib": [layout.python_stdlib],
        "python_lib_dirs": layout.python_lib_dirs,
        "python_libraries": layout.python_libraries,
        "system_lib_dirs": layout.system_lib_dirs,
        "site_packages": layout.site_packages,
        "site_entries": layout.site_entries,
        "hub_packages": layout.hub_packages,
        "models_dir": [layout.models_dir],
        "allowed_files": layout.allowed_files,
    }
    every = {
        **mounted,
        "python_home": [layout.python_home],
        "system_libraries": layout.system_libraries,
        "data_dir": [layout.data_dir],
        "data_host_dir": [layout.data_host_dir],
    }
    for name, path in ((name, path) for name, paths in every.items() for path in paths):
        if not path.is_absolute():
            raise ValueError(f"{name}: {path} must be an absolute path")
    if layout.data_dir in _RESERVED_MOUNT_POINTS:
        raise ValueError(f"data_dir: {layout.data_dir} is a mount point the manifest reserves")
    for name, path in ((name, path) for name, paths in mounted.items() for path in paths):
        if path in _RESERVED_MOUNT_POINTS:
            raise ValueError(f"{name}: {path} is a mount point the manifest reserves")
        if _is_under(path, layout.data_dir):
            raise ValueError(f"{name}: {path} lies under the encrypted data_dir")
        if _is_under(path, layout.data_host_dir) or _is_under(layout.data_host_dir, path):
            raise ValueError(f"{name}: {path} overlaps data_host_dir {layout.data_host_dir}")


def _mounts(layout: EnclaveLayout) -> list[dict[str, str]]:
    identity = _unique(
        [
            layout.python_executable,
            *layout.python_libraries,
            layout.python_stdlib,
            *layout.python_lib_dirs,
            *layout.system_lib_dirs,
            # Only the closure is mounted: an optional package installed beside it (aiohttp
            # tries brotli) is then absent inside, an ImportError its importer handles,
            # rather than present but untrusted, which fails the import with EACCES.
            *(layout.site_entries or layout.site_packages),
            *layout.hub_packages,
            layout.models_dir,
            *layout.allowed_files,
        ]
    )
    # A path inside another identity mount is already visible there.
    identity = [
        path for path in identity if not any(p != path and _is_under(path, p) for p in identity)
    ]
    mounts = [
        {"path": "/lib", "uri": GRAMINE_RUNTIME_URI},
        {"type": "tmpfs", "path": "/tmp"},  # noqa: S108 - in enclave memory, never on the host
        {
            "type": "encrypted",
            "path": str(layout.data_dir),
            "uri": f"file:{layout.data_host_dir}",
            "key_name": layout.sealing_key,
        },
        *({"path": str(path), "uri": f"file:{path}"} for path in identity),
    ]
    # Parents before children: Gramine mounts in order, and a later mount may nest in an
    # earlier one (as the host libraries do in Gramine's /lib).
    mounts.sort(key=lambda mount: (len(PurePosixPath(mount["path"]).parts), mount["path"]))
    return mounts


def _stdlib_entries(stdlib: Path) -> list[Path]:
    if not stdlib.is_dir():
        return [stdlib]
    return sorted(
        path
        for path in stdlib.iterdir()
        if path.name not in STDLIB_UNTRUSTED and not path.name.startswith(STDLIB_UNTRUSTED_PREFIX)
    )


def _trusted(layout: EnclaveLayout) -> list[str]:
    site = layout.site_entries or layout.site_packages
    stdlib = _stdlib_entries(layout.python_stdlib)
    files = [layout.python_executable, *layout.python_libraries, *layout.system_libraries]
    files += [path for path in (*site, *stdlib) if not path.is_dir()]
    dirs = _unique(
        [
            *(path for path in stdlib if path.is_dir()),
            *layout.python_lib_dirs,
            *([] if layout.system_libraries else layout.system_lib_dirs),
            *(path for path in site if path.is_dir()),
            *layout.hub_packages,
            layout.models_dir,
        ]
    )
    dirs = [path for path in dirs if not any(p != path and _is_under(path, p) for p in dirs)]
    files = [path for path in _unique(files) if not any(_is_under(path, d) for d in dirs)]
    return [
        GRAMINE_LIBOS_URI,
        f"{GRAMINE_RUNTIME_URI}/",
        *(f"file:{path}" for path in files),
        *(f"file:{path}/" for path in dirs),
    ]


def _env(layout: EnclaveLayout) -> dict[str, str]:
    # The interpreter's own libpython before the system's: a distribution's libpython of the
    # same version may sit in the system directories, and it is not the one this binary wants.
    library_path = _unique(
        [Path("/lib"), *(lib.parent for lib in layout.python_libraries), *layout.system_lib_dirs]
    )
    python_path = _unique(
        [*(package.parent for package in layout.hub_packages), *layout.site_packages]
    )
    return {
        "LD_LIBRARY_PATH": ":".join(map(str, library_path)),
        "PYTHONHOME": str(layout.python_home),
        "PYTHONPATH": ":".join(map(str, python_path)),
        "PYTHONDONTWRITEBYTECODE": "1",  # trusted files are read-only anyway
        "PYTHONUNBUFFERED": "1",  # log lines reach the host as they happen
        # The C locale is built into the C library; any other needs locale files.
        "LC_ALL": "C",
        "PYTHONUTF8": "1",
        # ONNX Runtime's usage telemetry (1.2x+, Linux too) writes a database under the home
        # directory and phones home: neither belongs in an enclave.
        "ORT_DISABLE_TELEMETRY": "1",
        # NumPy's OpenBLAS starts a thread per host core; sgx.max_threads is a hard limit.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


def _inline_table(table: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{key} = {_toml_string(value)}" for key, value in table.items()) + " }"


def hub_argv(layout: EnclaveLayout) -> list[str]:
    """The hub's command line inside the enclave (argv[0] included)."""
    # -S: no site module at all (no user site-packages, no .pth hooks, no implicit
    # site-packages); every import comes from PYTHONPATH and PYTHONHOME, and only trusted
    # files there can be read.
    return [str(layout.python_executable), "-S", "-m", "cloud_hub.cli", "serve", *layout.hub_args]


def load_template() -> str:
    return (
        importlib.resources.files("cloud_hub.enclave")
        .joinpath(TEMPLATE_NAME)
        .read_text(encoding="utf-8")
    )


def render_manifest(layout: EnclaveLayout) -> str:
    """The hub's manifest template for ``gramine-manifest``, as TOML text. Deterministic."""
    _check_settings(layout)
    _check_paths(layout)
    argv = hub_argv(layout)
    values = {
        "entrypoint": _toml_string(argv[0]),
        "log_level": _toml_string(layout.log_level),
        "argv": "[" + ", ".join(_toml_string(arg) for arg in argv) + "]",
        "env": "\n".join(
            f"loader.env.{key} = {_toml_string(value)}" for key, value in _env(layout).items()
        ),
        "mounts": "\n".join(f"  {_inline_table(mount)}," for mount in _mounts(layout)),
        "enclave_size": _toml_string(layout.enclave_size),
        "max_threads": str(layout.max_threads),
        "isv_prod_id": str(layout.isv_prod_id),
        "isv_svn": str(layout.isv_svn),
        "trusted_files": "\n".join(f"  {_toml_string(uri)}," for uri in _trusted(layout)),
        "allowed_files": "\n".join(
            f"  {_toml_string(f'file:{path}')}," for path in _unique(layout.allowed_files)
        ),
    }
    return Template(load_template()).substitute(values)


def trusted_files(manifest_toml: Mapping[str, Any]) -> list[str]:
    """The ``sgx.trusted_files`` URIs of a parsed manifest (string or table entries)."""
    entries = manifest_toml.get("sgx", {}).get("trusted_files", [])
    return [entry if isinstance(entry, str) else str(entry["uri"]) for entry in entries]
