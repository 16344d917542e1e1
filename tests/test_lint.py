"""The linter configured in pyproject.toml ([tool.ruff]) passes on the whole repository."""
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
  ruff = shutil.which("ruff")
  if ruff is None:
    pytest.skip("ruff is not installed (pip install -e '.[test]')")
  result = subprocess.run([ruff, "check", "--output-format=concise", "."], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr
