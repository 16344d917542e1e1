"""pyproject.toml against what it installs: Python versions, accelerator extras, and the
line launch.py logs about the devices it found."""
import importlib.metadata
import re
import subprocess
import tomllib

from packaging.specifiers import SpecifierSet

from launch_helpers import REPO, launch_command, write_tiny_config

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirement(name: str) -> str:
  (line,) = [d for d in PROJECT["dependencies"] if re.match(rf"{name}\b", d)]
  return line[len(name):]


def test_requires_python_admits_no_python_the_pinned_libraries_refuse():
  ours = SpecifierSet(PROJECT["requires-python"])
  for library in ("jax", "jaxlib", "flax", "orbax-checkpoint"):
    theirs = SpecifierSet(importlib.metadata.metadata(library)["Requires-Python"] or "")
    for minor in range(8, 16):
      version = f"3.{minor}"
      assert not (version in ours and version not in theirs), (library, version, str(theirs))


def test_accelerator_extras_pin_the_same_jax_as_the_cpu_install():
  extras = PROJECT["optional-dependencies"]
  jax = _requirement("jax")
  assert extras["cuda12"] == [f"jax[cuda12]{jax}"]
  assert extras["tpu"] == [f"jax[tpu]{jax}"]


def test_launch_logs_backend_device_kind_and_count(tmp_path):
  config = write_tiny_config(tmp_path)
  result = subprocess.run(launch_command(config, tmp_path / "run", "--config.num_train_steps=1"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # conftest's 8 fake CPU devices, inherited by the child
  assert "backend cpu: 8 device(s) of kind 'cpu', 8 local, 1 process(es)" in result.stderr
