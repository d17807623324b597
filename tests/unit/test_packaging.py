"""`pip install .`: the wheel built from a clean copy of the tree carries the code, the shipped
models and css, the `llm-explorer` command, and requirements.txt as its dependencies."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _tracked_copy(dest: Path) -> Path:
    """The files git tracks (a clean checkout), without the caches a working tree collects."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_the_wheel_ships_code_assets_and_the_console_script(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    src = _tracked_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(src), "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("llm_explorer-*.whl")))
    names = set(wheel.namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "assets").rglob("*") if p.is_file()}
    assert shipped and shipped <= names                     # every model file and the css
    code = {p.relative_to(ROOT).as_posix() for pkg in ("llm_core", "tabs") for p in (ROOT / pkg).rglob("*.py")}
    assert code <= names and "app.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "llm-explorer = app:main" in wheel.read(entry).decode()
    requires = [line.removeprefix("Requires-Dist: ") for line in wheel.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist: ")]
    wanted = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert requires == [w for w in wanted if w]
    assert "License-Expression: MIT" in wheel.read(meta).decode()
