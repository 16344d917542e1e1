"""launch.py as a peer that compiles slower: `python tests/slow_peer.py NAME=SECONDS,... ARGS`.

Each named function of rir_jax.train sleeps SECONDS whenever it is traced, that is, while
its program compiles; then launch.py runs with ARGS. A multi-process test gives one process
these delays to stand for a loaded host or a compilation-cache miss that its peers did not
have (tests/test_multihost.py).
"""
import functools
import pathlib
import runpy
import sys
import time

from rir_jax import train


def _slowed(function, seconds: float):
  @functools.wraps(function)
  def slow(*args, **kwargs):
    time.sleep(seconds)
    return function(*args, **kwargs)
  return slow


def main() -> None:
  delays, *launch_args = sys.argv[1:]
  for name_seconds in delays.split(","):
    name, seconds = name_seconds.split("=")
    setattr(train, name, _slowed(getattr(train, name), float(seconds)))
  launch = pathlib.Path(__file__).resolve().parent.parent / "launch.py"
  sys.argv, sys.path[0] = [str(launch), *launch_args], str(launch.parent)  # as `python launch.py`
  runpy.run_path(str(launch), run_name="__main__")


if __name__ == "__main__":
  main()
