"""CNN vs ResNet vs RiR: accuracy over seeds and training speed, through launch.py's code path.

  python -m benchmarks.compare --dataset=mnist --manual_dir=../shared/data/mnist \
      --models=cnn,resnet,rir --seeds=3 --epochs=5 --out=benchmarks/results/mnist
  python -m benchmarks.compare --smoke --manual_dir=../shared/data/mnist --out=/tmp/b

Writes OUT/results.json, OUT/results.md, OUT/curves.png, OUT/throughput.png, and one
workdir per (model, seed) under OUT/runs/ (re-running reuses finished runs). SIGTERM,
SIGINT or SIGHUP stop it as they stop launch.py: the run in training checkpoints its step
and the command exits 128 + the signal; re-running it resumes there.
"""
from __future__ import annotations

from rir_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_huge_pages()  # first: the imports below would run twice

import argparse
import importlib.util
import json
import pathlib
import platform
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections

from benchmarks import report
from configs import cifar, mnist
from rir_jax import checkpoint, checks, data, loop, metrics, stopping, trainer
from rir_jax import workdir as workdir_lib
from rir_jax.kernels import select
from rir_jax.models import count_params

MNIST_LIKE = ("mnist", "fashion_mnist")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="cnn,resnet,rir",
                 help="registry names (default kwargs: ~0.27M parameters each) or config files")
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--manual_dir", default=None)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--epochs", type=float, default=5.0)
  p.add_argument("--steps", type=int, default=-1, help="> 0: a fixed number of steps instead")
  p.add_argument("--seeds", type=int, default=3, help="number of seeds: 0 .. seeds-1")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--kernels", "--conv_impl", default="auto",
                 choices=(*select.CHOICES, *select.OLD_NAMES),
                 help="the models' kernels (the same function; only speed differs)")
  p.add_argument("--out", required=True, type=pathlib.Path)
  p.add_argument("--smoke", action="store_true",
                 help="MNIST, 2 seeds, 80 steps of 64: the whole pipeline in minutes on a CPU")
  args = p.parse_args(argv)
  if args.smoke:
    args.dataset, args.seeds, args.steps, args.batch_size = "mnist", 2, 80, 64
  return args


def base_config(spec: str, args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The recipe for the dataset, with the model named by `spec` (a name or a config file)."""
  if spec.endswith(".py"):
    module_spec = importlib.util.spec_from_file_location(pathlib.Path(spec).stem, spec)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config()
  else:
    config = (mnist.get_config("model=cnn") if args.dataset in MNIST_LIKE
              else cifar.get_config("model=resnet"))
    config.model = ml_collections.ConfigDict({"name": spec})
  config.data.name = args.dataset
  config.data.manual_dir = args.manual_dir
  config.data.data_dir = args.data_dir
  config.batch_size = args.batch_size
  config.dtype = args.dtype
  config.kernels = select.canonical(args.kernels)
  config.schedule.name = "cosine"  # the same schedule for every model, whatever the budget
  config.schedule.boundaries_epochs = ()
  config.num_epochs = args.epochs
  config.num_train_steps = args.steps
  # At least five evaluations per run, so the accuracy curve has a shape.
  config.eval_every_epochs = min(1.0, args.epochs / 5)
  config.eval_every_steps = max(args.steps // 5, 1) if args.steps > 0 else -1
  config.log_every_steps = 25
  config.checkpoint_every_steps = 1000  # a run killed hard (no signal) loses at most these
  config.keep_checkpoints = 1
  return config


def finished(config, workdir: pathlib.Path) -> dict | None:
  """The result of a finished run of exactly this config in `workdir`, else None."""
  done = workdir / "result.json"
  if not done.exists():
    return None
  result = json.loads(done.read_text())
  if (workdir_lib.config_differences(result["config"], config)
      or _other_kernels(result["config"], config)):
    return None
  if "trained_from_step" not in result:  # written before the key existed
    result["trained_from_step"] = _last_start(workdir / "metrics.jsonl")
  return result


def _other_kernels(saved: dict, config) -> bool:
  """Whether a saved config names other kernels: a resume may change them (the same
  math), but a study times its runs."""
  return workdir_lib.saved_kernels(saved) != config.kernels


def _out_of_date(workdir: pathlib.Path, config) -> bool:
  """Whether `workdir` holds a run of another budget, recipe or kernels than `config`."""
  try:
    workdir_lib.check(workdir, config)
  except workdir_lib.WorkdirError:
    return True
  saved = workdir_lib.saved_config(workdir)
  return saved is not None and _other_kernels(saved, config)


def run_one(config, dataset, workdir: pathlib.Path,
            signals=stopping.NO_SIGNALS) -> dict:
  """Trains one (model, seed) with launch.py's loop; reuses a finished run's result."""
  result = finished(config, workdir)
  if result is not None:
    return result
  checks.validate(config, device_count=jax.device_count(), process_count=1)
  if _out_of_date(workdir, config):
    # Set aside, not deleted: hours of training should not vanish on a changed flag.
    aside = workdir.with_name(f"{workdir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"{workdir} holds a run of another config: moved to {aside}", flush=True)
    workdir.rename(aside)
  workdir_lib.claim(workdir, config, main=True)
  # Where this process starts: a resumed run's wall time covers only the steps after it.
  trained_from = checkpoint.newest_step(workdir / "checkpoints") or 0
  start = time.perf_counter()
  final = loop.train_and_evaluate(config, workdir, dataset, signals=signals)
  wall = time.perf_counter() - start
  lines = metrics.read_metrics(workdir / "metrics.jsonl")
  speeds = [l["train/images_per_sec"] for l in lines if "train/images_per_sec" in l][1:]
  result = {
      "seed": config.seed, "eval/accuracy": final["eval/accuracy"],
      "eval/loss": final["eval/loss"], "wall_seconds": wall,
      "trained_from_step": trained_from,
      "compile_seconds": next(l["train/compile_seconds"] for l in lines
                              if "train/compile_seconds" in l),
      "images_per_sec": statistics.median(speeds) if speeds else None,
      "curve": [{k: l[k] for k in ("step", "train/epoch", "train/loss", "eval/accuracy")
                 if k in l} for l in lines if "train/loss" in l or "eval/accuracy" in l],
      "config": workdir_lib.config_json(config),
  }
  (workdir / "result.json").write_text(json.dumps(result))
  return result


def _last_start(metrics_file: pathlib.Path) -> int | None:
  """For results written before `trained_from_step`: the step the run's last training
  process started from, by its metrics (None where they are gone)."""
  if not metrics_file.exists():
    return None
  starts = [line["step"] for line in metrics.read_metrics(metrics_file)
            if "train/compile_seconds" in line]  # one line per process, at its first step
  return starts[-1] if starts else None


def model_facts(config, dataset) -> dict:
  """Parameter count and forward FLOPs per example (XLA's cost analysis, eval mode).

  Counted on XLA's convolutions: the cost analysis sees nothing inside oneDNN's.
  """
  config = config.copy_and_resolve_references()
  config.kernels = "xla"
  model = trainer.make_model(config, dataset.num_classes)
  x = jax.ShapeDtypeStruct((8, *dataset.train_images.shape[1:]), jnp.float32)
  # Shapes alone: initialising for real would compile the initialiser, for nothing.
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape),
                                                train=False))
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"params": count_params(variables["params"]),
          "forward_flops_per_example": float(cost["flops"]) / x.shape[0]}


def summarize(name: str, facts: dict, runs: list[dict]) -> dict:
  accs = [r["eval/accuracy"] for r in runs]
  speeds = [r["images_per_sec"] for r in runs if r["images_per_sec"]]
  return {
      "model": name, **facts, "runs": runs,
      "accuracy_mean": statistics.mean(accs),
      "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
      "loss_mean": statistics.mean(r["eval/loss"] for r in runs),
      "images_per_sec": statistics.median(speeds) if speeds else None,
      "compile_seconds": statistics.median(r["compile_seconds"] for r in runs),
      "wall_seconds_mean": _wall_mean(runs),
  }


def _wall_mean(runs: list[dict]) -> float | None:
  """Mean wall time of the runs trained start to end in one process (None: none was)."""
  whole = [r["wall_seconds"] for r in runs if r.get("trained_from_step") == 0]
  return statistics.mean(whole) if whole else None


def prepare(args: argparse.Namespace):
  """launch.py's host set-up, the dataset and the output folder; None after one line on
  stderr where the dataset cannot be loaded."""
  host_memory.reuse_freed_memory()
  try:
    dataset = data.load_dataset(args.dataset, data_dir=args.data_dir,
                                manual_dir=args.manual_dir)
  except data.DataError as error:
    print(f"error: {error}", file=sys.stderr)
    return None
  args.out.mkdir(parents=True, exist_ok=True)
  return dataset


def main(argv=None) -> int:
  args = parse_args(argv)
  dataset = prepare(args)
  if dataset is None:
    return 2
  return stopping.orderly(lambda signals: _compare(args, argv, dataset, signals))


def _compare(args, argv, dataset, signals) -> int:
  models = []
  for spec in args.models.split(","):
    name = pathlib.Path(spec).stem if spec.endswith(".py") else spec
    runs = []
    for seed in range(args.seeds):
      config = base_config(spec, args)
      config.seed = seed
      print(f"== {name} seed {seed}", flush=True)
      runs.append(run_one(config, dataset, args.out / "runs" / name / f"seed{seed}",
                          signals))
    models.append(summarize(name, model_facts(base_config(spec, args), dataset), runs))
  results = {
      "command": " ".join(["python", "-m", "benchmarks.compare", *(argv or sys.argv[1:])]),
      "dataset": args.dataset, "train_examples": len(dataset.train_labels),
      "test_examples": len(dataset.test_labels), "seeds": args.seeds,
      "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "convolutions": select.resolve(args.kernels),
      "jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
      "models": models,
  }
  (args.out / "results.json").write_text(json.dumps(results, indent=1))
  report.write_all(results, args.out)
  print((args.out / "results.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
