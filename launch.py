"""Trains one config into one workdir; re-running the same command resumes it.

  python launch.py --config=configs/rir_cifar.py --workdir=runs/rir1 [--config.key=value ...]

Exit codes: 0 done; 2 bad usage, config or data (one line on stderr, workdir untouched);
1 a failure during the run (non-finite loss, a checkpoint that cannot be written);
143 / 130 stopped by SIGTERM / SIGINT at a step boundary, that step checkpointed.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import logging as std_logging
import os
import pathlib
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from rir_jax import compile_cache, errors, library_noise, renamed, run, storage

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config: configs/NAME.py[:VARIANT].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for config.json, metrics, checkpoints: a local "
                    "path or gs://BUCKET/FOLDER.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for multi-process runs (GPU boxes, loopback).")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_bool("auto_distributed", False,
                  "Join a multi-host run by auto-detection (every worker of a TPU VM slice).")
flags.DEFINE_integer("distributed_timeout", None,
                     "Seconds a multi-process run waits for a missing, dead or silent peer "
                     "before it fails (default: JAX's, 100-300 s).", lower_bound=1)
flags.DEFINE_string("jax_cache_dir", str(pathlib.Path.home() / ".cache" / "rir_jax" / "xla"),
                    "Persistent compilation cache: a re-run skips compiling. Empty to disable.")
flags.DEFINE_bool("reuse_host_memory", True,
                  "Let malloc keep freed memory (glibc): XLA's CPU runtime otherwise maps, "
                  "faults in and zeroes each step's scratch anew (rir_jax/host_memory.py).")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with its errors reduced to one line and exit code 2."""
  try:
    sys.argv = argv = renamed.flags(argv)  # config_flags reads its overrides from sys.argv
    rest = FLAGS(argv)
    if FLAGS.config is None or not FLAGS.workdir:
      raise flags.Error("--config and --workdir are required")
    for name in ("workdir", "jax_cache_dir"):
      try:
        storage.check_supported(FLAGS[name].value or "")
      except storage.UnsupportedURL as error:
        raise flags.Error(f"--{name}: {error}") from None
    FLAGS.config.keys()  # the config file loads lazily: make its errors happen here
    if not isinstance(FLAGS.config, ml_collections.ConfigDict):
      raise flags.Error(f"--config: get_config() returned a {type(FLAGS.config).__name__}, "
                        "not an ml_collections.ConfigDict")
    return rest
  except Exception as error:  # noqa: BLE001 - a config file that raises lands here too
    errors.fail(_describe(error))


def _describe(error: BaseException) -> str:
  """One line for a flag or config-file error, without the traceback config_flags embeds."""
  root = errors.innermost(error)
  if isinstance(root, KeyError):
    return (f"unknown config key {root.args[0]!r}; the keys are those of configs/default.py "
            "and of the config file")
  top = errors.one_line(error)
  if isinstance(error, flags.Error) and "Traceback" not in top:
    return top
  return f"--config: {errors.one_line(root)}"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    errors.fail(f"unexpected arguments {argv[1:]}; settings go in --config.key=value")
  # Our progress at INFO; the libraries' (Orbax logs every save step by step) at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("rir_jax").setLevel(std_logging.INFO)
  library_noise.cut_to_one_line()
  compile_cache.remove_damaged_entries()
  if FLAGS.reuse_host_memory:
    host_memory.reuse_freed_memory()  # before JAX starts its threads
  code = run.launch(
      FLAGS.config, storage.as_path(FLAGS.workdir),
      distributed=run.Distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id, FLAGS.auto_distributed,
                                  FLAGS.distributed_timeout),
      jax_cache_dir=FLAGS.jax_cache_dir)
  if code == 1:
    # After a failed save (a read-only or vanished disk), Orbax's helper threads wait
    # out a 300 s signal timeout before Python may exit; the error is reported and the
    # writers are closed, so nothing is left to wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  sys.exit(code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
