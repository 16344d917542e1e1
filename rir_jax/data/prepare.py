"""Prepares a dataset once, so training can start without downloading or decoding.

    python -m rir_jax.data.prepare mnist
    python -m rir_jax.data.prepare cifar10 --manual_dir ~/Downloads   # holds cifar-10-binary.tar.gz
    python -m rir_jax.data.prepare cifar10_jpeg --manual_dir ../shared/data/cifar10_jpeg

Prints where the data went, the examples per split and the time taken. Running
it again is instant. A problem with the input is one line on stderr, exit 2.
"""
import argparse
import sys
import time

from rir_jax.data import loader
from rir_jax.data import registry
from rir_jax.data.errors import DataError


class _Parser(argparse.ArgumentParser):
  """Reports usage errors as one line and exit status 2, like every rir-jax tool."""

  def error(self, message):
    self.exit(2, f'error: {message} (see --help)\n')


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog='python -m rir_jax.data.prepare', description=__doc__.split('\n')[0])
  parser.add_argument('name', help=f'one of: {", ".join(registry.DATASET_NAMES)}')
  parser.add_argument('--manual_dir', help='folder holding the original files; no download')
  parser.add_argument('--data_dir', help='where prepared data goes (default: $TFDS_DATA_DIR '
                      'or ~/tensorflow_datasets)')
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  start = time.perf_counter()
  try:
    prepared = loader.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{args.name}: prepared in {prepared.path}')
  for split, count in prepared.num_examples.items():
    print(f'  {split}: {count:,} examples')
  print(f'  took {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
