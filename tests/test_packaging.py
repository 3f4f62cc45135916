"""What a release ships: the MIT licence in the source distribution and the wheel's metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_ships_in_the_sdist_and_is_named_in_its_metadata(tmp_path: Path) -> None:
    for name in ["setup.py", "pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "requests_piggy_auth", tmp_path / "requests_piggy_auth")
    build = "import setuptools.build_meta as b; print(b.build_sdist('dist'))"
    built = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", build],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    sdist = tmp_path / "dist" / built.stdout.splitlines()[-1]

    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        (pkg_info,) = [name for name in names if name.count("/") == 1 and name.endswith("PKG-INFO")]
        metadata = archive.extractfile(pkg_info).read().decode()  # type: ignore[union-attr]
    top = names[0].split("/")[0]
    assert f"{top}/LICENSE" in names
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    # The wheel takes its licence files from this metadata.
    assert "License-File: LICENSE" in metadata.splitlines()
