"""`w2sd plugins new NAME` writes a package whose own tests pass after `pip install -e` (in a fresh venv)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner


def test_new_plugin_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    made = CliRunner().invoke(build_app(), ["plugins", "new", "my-pairs", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    root = tmp_path / "w2sd-my-pairs"
    assert (root / "w2sd_my_pairs" / "kind.py").is_file() and (root / "tests" / "test_plugin.py").is_file()
    again = CliRunner().invoke(build_app(), ["plugins", "new", "my-pairs", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = CliRunner().invoke(build_app(), ["plugins", "new", "My Pairs", "--dir", str(tmp_path)])
    assert bad.exit_code == 1 and "lowercase" in bad.output

    venv = tmp_path / "venv"  # a fresh venv that sees this one's packages (w2sd, torch) but not its plugins
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
                              str(root)], capture_output=True, text=True, env=env)
    if install.returncode and "hatchling" in install.stderr:
        pytest.skip("hatchling is not installed (pip install -e '.[dev]' brings it)")
    assert install.returncode == 0, install.stderr
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           capture_output=True, text=True, env=env, cwd=root)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
