"""Small tmpfs file systems for tests of full and read-only disks (root only; else skipped).

conftest.py's `mounts` fixture unmounts them after each test."""
import pathlib
import subprocess

import pytest


def mount_tmpfs(folder: pathlib.Path, *options: str) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                           str(folder)], capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def fill(folder: pathlib.Path) -> None:
  """Writes until the file system is full."""
  with open(folder / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to flush
    try:
      while True:
        f.write(b"\0" * (1 << 16))
    except OSError:
      pass
