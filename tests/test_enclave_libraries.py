"""The system libraries the enclave trusts, resolved by the real dynamic loader (ldd)."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from cloud_hub.enclave.libraries import elf_objects, is_elf, system_libraries

pytestmark = pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd on this system")


def test_a_python_extension_s_libraries_come_from_the_search_dirs(tmp_path: Path) -> None:
    import _ssl  # links libssl and libcrypto on every glibc CPython build we run

    multiarch = sysconfig.get_config_var("MULTIARCH")
    search = [d for d in (Path("/lib") / multiarch, Path("/usr/lib") / multiarch) if d.is_dir()]
    if not multiarch or not search:
        pytest.skip("no multiarch system library directory")
    ext = Path(_ssl.__file__)
    found = system_libraries([ext], search)
    assert any(lib.name.startswith("libssl.so") for lib in found), found
    # Named under the first search directory that holds the same file.
    assert {lib.parent for lib in found} == {search[0]}
    # Outside every search directory: nothing is trusted for it.
    assert system_libraries([ext], [tmp_path]) == []


def test_only_elf_files_are_scanned(tmp_path: Path) -> None:
    fake = tmp_path / "fake.so"
    fake.write_text("not an ELF file")
    real = Path(sys.executable).resolve()
    assert not is_elf(fake)
    assert is_elf(real)
    assert elf_objects([tmp_path, real]) == [real]
