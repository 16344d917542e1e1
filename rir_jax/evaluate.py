"""Evaluates a trained workdir's checkpoint on its test or validation split.

  python -m rir_jax.evaluate --workdir=DIR [--split=test|validation] [--step=best|last|N]
      [--out=FOLDER] [--config.data.KEY=VALUE ...]   e.g. --config.data.manual_dir=...

Prints one line and writes DIR/eval/<split>-<step>.json (top-1, top-5 where there are more
than 5 classes, loss, per-class accuracy, confusion matrix) and <split>-<step>-confusion.png;
--out writes them in FOLDER instead (a workdir on read-only storage). Top-1 and loss come
from the training loop's own eval program on the same batches, so they equal the run's eval
line of the same split and step. Exit codes: 0 done, 2 bad usage, 1 a failure while
writing (the line is printed first: the numbers are not lost).
"""
from __future__ import annotations

import io
import json

import jax
import numpy as np

from rir_jax import cli, errors, eval_report, inference, loading, storage
from rir_jax.data import validation

SPLITS = ("test", "validation")


def _parser() -> cli.Parser:
  parser = cli.Parser(prog="python -m rir_jax.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.path_argument)
  parser.add_argument("--split", default="test", choices=SPLITS)
  parser.add_argument("--step", default="last",
                      help="best, last (default) or a step number")
  parser.add_argument("--out", type=cli.path_argument,
                      help="the report's folder (default: WORKDIR/eval)")
  return parser


def _split(config, split: str, workdir: storage.Path):
  """(images, labels) of `split` as the run carved it."""
  if split == "validation" and not config.data.validation_examples:
    raise errors.UsageError(f"{workdir} was trained without a validation split "
                         "(data.validation_examples=0): use --split=test")
  dataset = validation.load_for_config(config.data)
  if split == "validation":
    return dataset.validation_images, dataset.validation_labels
  return dataset.test_images, dataset.test_labels


def _check_data_fits(trained: loading.Trained, images: np.ndarray) -> None:
  expected = tuple(trained.preprocess.image_shape)
  if tuple(images.shape[1:]) != expected:
    raise errors.UsageError(f"the data's images are {images.shape[1:]}, the model takes "
                         f"{expected}: check --config.data.*")


def _batch_size(config) -> int:
  """The run's eval batch (the same numbers), rounded up to fill every device here."""
  devices = jax.device_count()
  return -(-config.eval_batch_size // devices) * devices


def evaluate(workdir: storage.Path, split: str, step, overrides: dict[str, str]) -> dict:
  """The results; raises the USAGE_ERRORS and errors.UsageError before writing anything."""
  config = cli.run_config(workdir, overrides)
  trained = loading.load_trained(workdir, step)
  images, labels = _split(config, split, workdir)
  _check_data_fits(trained, images)
  batch = _batch_size(config)
  totals = inference.split_totals(trained, images, labels, batch_size=batch)
  logits = inference.logits(trained, images, batch_size=batch)
  return {"split": split, "step": trained.step, "examples": int(totals["count"]),
          "top1_accuracy": totals["correct"] / totals["count"],
          "loss": totals["loss_sum"] / totals["count"],
          **eval_report.report(logits, labels, list(trained.preprocess.class_names))}


def write(folder: storage.Path, run_name: str,
          results: dict) -> tuple[storage.Path, storage.Path]:
  """The report and its picture, each written whole or not at all (a kill, a full disk)."""
  folder.mkdir(parents=True, exist_ok=True)
  stem = f"{results['split']}-{results['step']}"
  report = folder / f"{stem}.json"
  storage.write_atomic(report, json.dumps(results, indent=1) + "\n")
  picture = folder / f"{stem}-confusion.png"
  title = (f"{run_name}: {results['split']} split, step {results['step']}, "
           f"top-1 {results['top1_accuracy']:.4f}")
  png = io.BytesIO()
  eval_report.confusion_image(np.asarray(results["confusion_matrix"]),
                              list(results["per_class_accuracy"]), title).save(png, format="png")
  storage.write_atomic(picture, png.getvalue())
  return report, picture


def main(argv: list[str]) -> int:
  cli.quiet_libraries()
  try:
    rest, overrides = cli.split_data_overrides(argv)
    args = _parser().parse_args(rest)
    results = evaluate(args.workdir, args.split, loading.parse_step(args.step), overrides)
  except (errors.UsageError, *cli.USAGE_ERRORS) as error:
    errors.fail(error)
  folder = args.out or args.workdir / "eval"
  top5 = (f", top-5 {results['top5_accuracy']:.4f}" if "top5_accuracy" in results else "")
  line = (f"{results['split']} step {results['step']}: top-1 {results['top1_accuracy']:.4f}"
          f"{top5}, loss {results['loss']:.4f} ({results['examples']} examples)")
  try:
    report, picture = write(folder, args.workdir.name, results)
  except OSError as error:
    print(line, flush=True)  # the evaluation's numbers stand without the report
    reason = error.strerror or errors.one_line(error)
    errors.fail(f"could not write the report in {folder}: {reason}"
                + ("" if args.out else "; --out=FOLDER writes it elsewhere"), 1)
  print(f"{line}; {report}, {picture.name}")
  return 0


if __name__ == "__main__":
  cli.run(main)
