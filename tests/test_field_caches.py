"""What a run keeps between runs outside the workdir, damaged or changed under it: the
cached kernel library, JAX's compilation cache, prepared data, an image folder edited
after it was prepared; and
the kernels a workdir was trained on, which a resume must not change silently.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from disk_helpers import fill, mount_tmpfs
from launch_helpers import REPO, launch_command, read_checkpoint, write_tiny_config
import rir_jax
from rir_jax import compile_cache, data, metrics

_LOAD_LIBRARY = ("from rir_jax.kernels import build; ok, why = build.is_available(); "
                 "print('available' if ok else 'unavailable: ' + why)")


@pytest.fixture
def damaged_library_cache(cpu_kernel_library, tmp_path):
  """A copy of the built library's cache folder, the library cut short as a full disk or an
  interrupted copy leaves it."""
  from rir_jax.kernels import build
  built = build._library_path()  # pylint: disable=protected-access
  cache = tmp_path / "onednn"
  cache.mkdir()
  for path in built.parent.glob(built.name + "*"):
    shutil.copy(path, cache / path.name)
  os.truncate(cache / built.name, 120_000)
  return cache


def _load_library(cache, **env):
  return subprocess.run([sys.executable, "-c", _LOAD_LIBRARY], cwd=REPO, capture_output=True,
                        text=True, timeout=600,
                        env={**os.environ, "RIR_JAX_ONEDNN_CACHE": str(cache), **env})


def test_a_truncated_cached_kernel_library_is_rebuilt_not_loaded(damaged_library_cache):
  result = _load_library(damaged_library_cache)
  assert result.returncode == 0, result.stderr[-3000:]  # not -7, a bus error
  assert result.stdout.strip() == "available", result.stdout + result.stderr[-3000:]
  assert "damaged or unverified: rebuilding it" in result.stderr


def test_a_truncated_library_that_cannot_be_rebuilt_falls_back_to_xla(damaged_library_cache):
  result = _load_library(damaged_library_cache, PATH="/nonexistent")  # no g++ to rebuild with
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("unavailable: RuntimeError: g++ not found"), result.stdout
  assert "damaged or unverified" in result.stderr


def test_a_kernel_cache_that_cannot_be_written_is_a_warning_and_xla(tmp_path, mounts):
  cache = tmp_path / "read_only"
  mount_tmpfs(cache, "ro")
  mounts.append(cache)
  result = _load_library(cache)
  assert result.returncode == 0, result.stderr[-3000:]
  reason = f"cannot write in {cache} (Read-only file system)"
  assert result.stdout.strip() == f"unavailable: BuildFailed: {reason}", result.stdout
  assert f"did not build, so convolutions run on XLA's, slower: {reason}" in result.stderr


def test_a_failed_build_is_told_by_its_error_lines_not_the_compilers_warnings():
  from rir_jax.kernels import build
  stderr = ("In file included from ffi.h:49,\napi.h:193:1: warning: control reaches end\n"
            "  193 | }\n/usr/bin/ld: final link failed: No space left on device\n"
            "collect2: error: ld returned 1 exit status\n")
  assert build._compiler_errors(stderr) == (  # pylint: disable=protected-access
      "/usr/bin/ld: final link failed: No space left on device; "
      "collect2: error: ld returned 1 exit status")


def _image_tree(root, per_class=4):
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for label in ("a", "b"):
      (root / split / label).mkdir(parents=True)
      for i in range(per_class):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / split / label / f"{i}.png")
  return root


def test_an_image_folder_changed_after_preparing_is_prepared_again(tmp_path):
  tree = _image_tree(tmp_path / "tree")
  load = lambda: data.load_dataset("image_folder", manual_dir=tree,  # noqa: E731
                                   data_dir=tmp_path / "tfds")
  first = load()
  assert len(first.train_labels) == 8
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tree / "train" / "a" / "new.png")
  assert len(load().train_labels) == 9  # an added image
  Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tree / "train" / "b" / "0.png")
  replaced = load()
  assert len(replaced.train_labels) == 9
  assert (replaced.train_images == 255).all(axis=(1, 2, 3)).sum() == 1  # an edited image


def test_damaged_prepared_data_names_the_folder_to_delete(tmp_path, caplog):
  tree = _image_tree(tmp_path / "tree")
  data_dir = tmp_path / "tfds"
  prepared = data.load_dataset("image_folder", manual_dir=tree, data_dir=data_dir)
  arrays = list(data_dir.rglob("rir_arrays"))[0]
  os.truncate(arrays / "train_images.npy", 100)  # the quick cache: made again
  again = data.load_dataset("image_folder", manual_dir=tree, data_dir=data_dir)
  np.testing.assert_array_equal(again.train_images, prepared.train_images)
  assert "damaged" in caplog.text

  shutil.rmtree(arrays)
  for record in arrays.parent.glob("*.array_record*"):  # the prepared files themselves
    os.truncate(record, 10)
  with pytest.raises(data.DataError, match="delete that folder") as error:
    data.load_dataset("image_folder", manual_dir=tree, data_dir=data_dir)
  assert str(arrays.parent) in str(error.value)


def _as_before_kernels_were_named(workdir):
  """The workdir's files as runs wrote them when `kernels` was `conv_impl`."""
  for name in ("config.json", "model.json", "kernels.json"):
    saved = json.loads((workdir / name).read_text())
    kernels = saved.pop("kernels")
    saved["conv_impl"] = "onednn" if kernels == "cpu_library" else kernels
    (workdir / name).write_text(json.dumps(saved))


def test_a_resume_keeps_the_kernels_the_workdir_recorded(cpu_kernel_library, tmp_path):
  """Trained on XLA (the library could not load then), resumed where the library loads:
  the run keeps XLA and ends bit-identical to the uninterrupted run, also where its
  workdir was written before `conv_impl` became `kernels`, as is resumed with the old flag."""
  tiny = write_tiny_config(tmp_path)
  no_library = {**os.environ, "RIR_JAX_ONEDNN_CACHE": "/proc/no_such_cache"}
  reference = tmp_path / "reference"
  result = subprocess.run(launch_command(tiny, reference), cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=no_library)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '"xla"' in (reference / "kernels.json").read_text()

  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  for step in ("10", "12"):  # as if stopped at step 8
    shutil.rmtree(workdir / "checkpoints" / step)
  _as_before_kernels_were_named(workdir)
  resumed = subprocess.run(launch_command(tiny, workdir), cwd=REPO, capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "keeping xla, as recorded" in resumed.stderr
  assert "conv_impl=auto is deprecated" in resumed.stderr
  for x, y in zip(jax.tree.leaves(read_checkpoint(workdir, 12)),
                  jax.tree.leaves(read_checkpoint(reference, 12)), strict=True):
    np.testing.assert_array_equal(x, y)

  other = subprocess.run(launch_command(tiny, workdir, "--config.conv_impl=onednn",
                                        "--config.allow_config_change=True",
                                        "--config.num_train_steps=14"),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
  assert other.returncode == 0, other.stderr[-3000:]
  assert "conv_impl=onednn is deprecated: it reads as kernels=cpu_library" in other.stderr
  assert "will not be bit-identical" in other.stderr


def test_a_run_on_the_cpu_library_moves_to_a_machine_without_it(cpu_kernel_library, tmp_path):
  """A GPU box, or a host where the library does not build: the run, copied there without
  its kernels.json, resumes with --config.kernels=auto (the same math, told not to be
  bit-identical), and its model predicts there on XLA's kernels what it predicts on the
  library's."""
  tiny = write_tiny_config(tmp_path)
  trained = tmp_path / "trained"
  result = subprocess.run(launch_command(tiny, trained, "--config.kernels=cpu_library"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  moved = tmp_path / "moved"
  shutil.copytree(trained, moved)
  for step in ("10", "12"):  # as if stopped at step 8
    shutil.rmtree(moved / "checkpoints" / step)
  (moved / "kernels.json").unlink()  # a copy without it: config.json names the kernels
  elsewhere = {**os.environ, "RIR_JAX_ONEDNN_CACHE": "/proc/no_such_cache"}

  def launch(*flags):
    return subprocess.run(launch_command(tiny, moved, *flags), cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=elsewhere)
  same = launch("--config.kernels=cpu_library")
  assert same.returncode == 2 and same.stderr.strip().splitlines()[-1].endswith(
      "use auto or xla"), same.stderr[-3000:]
  resumed = launch("--config.kernels=auto")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "the workdir's run used cpu_library" in resumed.stderr
  assert "will not be bit-identical" in resumed.stderr
  assert json.loads((moved / "kernels.json").read_text()) == {"kernels": "xla"}
  assert metrics.read_metrics(moved / "metrics.jsonl")[-1]["step"] == 12

  card = json.loads((trained / "model.json").read_text())
  assert card["kernels"] == "cpu_library"
  height, width, channels = card["preprocess"]["image_shape"]
  pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), np.uint8)
  Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(tmp_path / "x.png")
  predicted = subprocess.run(
      [sys.executable, "-m", "rir_jax.predict", f"--workdir={trained}", "--json", "--top_k=3",
       str(tmp_path / "x.png")], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=elsewhere)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert "trained on kernels 'cpu_library', which cannot run here" in predicted.stderr
  model, variables, preprocess = rir_jax.load(trained, step="last")  # here, on the library
  probabilities = np.sort(np.asarray(jax.nn.softmax(
      model.apply(variables, preprocess(pixels[None]), train=False)[0])))[::-1][:3]
  top_k = json.loads(predicted.stdout)["top_k"]
  np.testing.assert_allclose([c["probability"] for c in top_k], probabilities, rtol=1e-4)


def _entries(cache) -> dict[str, int]:
  return {p.name: p.stat().st_size for p in cache.glob("*-cache")}


def _launch_with_cache(config, workdir, cache, devices: int) -> str:
  """launch.py on `config` with its own compilation cache `cache`; its stderr."""
  command = [*launch_command(config, workdir), f"--jax_cache_dir={cache}"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_COMPILATION_CACHE_DIR": "",
                               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def test_damaged_compilation_cache_entries_are_removed_and_written_again(tmp_path):
  """Cut short as a preempted write or a partial copy leaves them: JAX alone would warn
  and recompile on every later run, never writing them again."""
  config, cache = write_tiny_config(tmp_path), tmp_path / "xla"
  launch = lambda name: _launch_with_cache(config, tmp_path / name, cache, devices=1)  # noqa: E731

  launch("first")
  whole = _entries(cache)
  assert any(name.startswith("jit_train_step-") for name in whole), whole
  for name, size in whole.items():
    os.truncate(cache / name, size // 2)
  stderr = launch("second")
  assert "UserWarning" not in stderr, stderr[-3000:]
  unreadable = [line for line in stderr.splitlines() if "unreadable" in line]
  # One line per function: the first unreadable entry removes all of its damaged ones.
  assert any("'jit_train_step'" in line for line in unreadable), stderr[-3000:]
  assert all("removed" in line for line in unreadable), unreadable
  # Written again, whole (a compile's bytes vary a little: names, not sizes, agree).
  assert _entries(cache).keys() == whole.keys()
  from jax._src import compilation_cache as jax_cache
  for name in whole:
    jax_cache.decompress_executable((cache / name).read_bytes())  # raises if cut
  assert "unreadable" not in launch("third")


def test_a_cache_on_a_full_disk_is_one_line_per_entry_and_leaves_no_cut_entry(tmp_path,
                                                                              mounts):
  cache = tmp_path / "full"
  mount_tmpfs(cache, "size=256k")
  mounts.append(cache)
  fill(cache)
  stderr = _launch_with_cache(write_tiny_config(tmp_path), tmp_path / "run", cache, devices=1)
  assert "UserWarning" not in stderr and "warnings.warn" not in stderr, stderr[-3000:]
  told = [line for line in stderr.splitlines() if "not written" in line]
  assert any("'jit_train_step' not written (OSError: [Errno 28] No space left on device): "
             "the next run compiles it again" in line for line in told), stderr[-3000:]
  assert _entries(cache) == {}  # what a cut write left is gone


def test_only_entries_that_do_not_decompress_are_removed(tmp_path):
  from jax._src import compilation_cache as jax_cache
  entry = jax_cache.compress_executable(np.random.default_rng(0).bytes(4096))
  for name, content in {"jit_step-aa-cache": entry, "jit_step-bb-cache": entry[:2000],
                        "jit_other-cc-cache": entry[:2000]}.items():
    (tmp_path / name).write_bytes(content)
  assert compile_cache.remove_damaged(str(tmp_path), "jit_step") == ["jit_step-bb-cache"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_other-cc-cache",
                                                        "jit_step-aa-cache"]


def test_a_sharded_step_on_the_kernel_library_is_compiled_once_across_processes(
    cpu_kernel_library, tmp_path):
  """Its custom partitioning used to put a per-process address in the cache key."""
  config, cache = write_tiny_config(tmp_path), tmp_path / "xla"

  def launch(name):
    _launch_with_cache(config, tmp_path / name, cache, devices=8)
    return [line for line in metrics.read_metrics(tmp_path / name / "metrics.jsonl")
            if "train/loss" in line]

  first = launch("first")
  entries = _entries(cache)
  assert any(name.startswith("jit_train_step-") for name in entries), entries
  second = launch("second")
  assert _entries(cache).keys() == entries.keys()  # every program read, none compiled anew
  assert [line["train/loss"] for line in second] == [line["train/loss"] for line in first]


KERNEL_PROGRAMS = '''
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from rir_jax import compile_cache
from rir_jax.kernels import batch_norm
assert compile_cache.stable_keys()
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
split = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))
rng = np.random.default_rng(0)
x, dy = (rng.standard_normal((16, 4, 4, 16)).astype(np.float32) for _ in range(2))
a, b = np.ones(16, np.float32), np.zeros(16, np.float32)
for relu in (True, False):  # programs that differ only in the kernel behind one call
  step = jax.jit(lambda x, dy, relu=relu: batch_norm.grad_sums(x, dy, a, b, relu))
  sums = np.asarray(step(jax.device_put(x, split), jax.device_put(dy, split)))
  g = np.where(x > 0, dy, 0) if relu else dy
  np.testing.assert_allclose(sums, [g.sum((0, 1, 2)), (g * x).sum((0, 1, 2))], rtol=1e-5,
                             atol=1e-5)
'''


def test_programs_that_differ_only_in_a_kernel_never_share_a_cache_entry(cpu_kernel_library,
                                                                          tmp_path):
  """With the address left out of the key, the kernel's named function keeps them apart."""
  script = tmp_path / "programs.py"
  script.write_text(KERNEL_PROGRAMS)
  for _ in range(2):  # compiled and written, then read back
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "xla")], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_COMPILATION_CACHE_DIR": "",
                                 "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert result.returncode == 0, result.stderr[-3000:]
  assert len(_entries(tmp_path / "xla")) == 2


ONE_PROGRAM_ON_A_CPU = '''
import sys
import jax, jax.numpy as jnp
from rir_jax import compile_cache
from rir_jax.kernels import build
if sys.argv[2] == "avx2_only":  # as a machine without AVX-512 sharing the cache folder
  build.cpu_flags = lambda: {"sse2", "avx", "avx2", "fma"}
assert compile_cache.stable_keys()
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: jnp.tanh(x) * 2)(jnp.ones(8)).block_until_ready()
'''


def test_machines_of_different_cpus_never_share_a_cache_entry(tmp_path):
  """XLA compiles for the host's instruction set; JAX's own key leaves the CPU out."""
  script = tmp_path / "program.py"
  script.write_text(ONE_PROGRAM_ON_A_CPU)
  for cpu, entries in (("this_cpu", 1), ("this_cpu", 1), ("avx2_only", 2)):
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "xla"), cpu],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_COMPILATION_CACHE_DIR": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    programs = [name for name in _entries(tmp_path / "xla") if name.startswith("jit__lambda-")]
    assert len(programs) == entries, (cpu, programs)
