"""Writes one self-contained file of a trained model: `rir_jax.load(FILE)` needs nothing else.

  python -m rir_jax.export --workdir=DIR --out=FILE [--step=best|last|N]

The file's format is described in rir_jax/exported.py (and the README). Exit codes:
0 done, 2 bad usage, 1 a failure while writing.
"""
from __future__ import annotations

from rir_jax import cli, errors, exported, loading, storage


def _parser() -> cli.Parser:
  parser = cli.Parser(prog="python -m rir_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.path_argument)
  parser.add_argument("--out", required=True, type=cli.path_argument)
  parser.add_argument("--step", default="best", help="best (default), last or a step number")
  return parser


def _check_out(out: storage.Path) -> None:
  if out.is_dir():
    raise errors.UsageError(f"--out={out} is a folder; give a file name, e.g. {out / 'model.msgpack'}")
  if storage.is_remote(out):  # a bucket has no folders to check, only itself
    try:
      storage.check_bucket(out)
    except FileNotFoundError as error:
      raise errors.UsageError(f"--out={out}: {error}") from error
  elif not out.parent.is_dir():
    raise errors.UsageError(f"--out={out}: folder {out.parent} does not exist")


def main(argv: list[str]) -> int:
  cli.quiet_libraries()
  try:
    args = _parser().parse_args(argv)
    if not args.workdir.is_dir():
      raise errors.UsageError(f"--workdir={args.workdir} is not a folder; give a training workdir")
    _check_out(args.out)
    trained = loading.load_trained(args.workdir, args.step)
  except (errors.UsageError, *cli.USAGE_ERRORS) as error:
    errors.fail(error)
  card = {**trained.card, "step": trained.step, "source": str(storage.absolute(args.workdir))}
  try:
    size = exported.write(args.out, card, trained.variables)
  except OSError as error:
    errors.fail(f"could not write {args.out}: {error.strerror}", 1)
  print(f"step {trained.step} of {args.workdir} -> {args.out} ({size / 1e6:.2f} MB)")
  return 0


if __name__ == "__main__":
  cli.run(main)
