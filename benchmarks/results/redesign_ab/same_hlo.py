"""Kept with these results: the train step's optimized HLO, before and after the redesign.

Run from either tree, then compare the two folders:
  (cd OLD_TREE && PYTHONPATH=$PWD python PATH/same_hlo.py dump OLD_DIR old)
  (cd main && PYTHONPATH=$PWD python PATH/same_hlo.py dump NEW_DIR new)
  python PATH/same_hlo.py compare OLD_DIR NEW_DIR

It compiles throughput.py's step (batch 128, the CPU kernel library) for resnet and rir
in f32 and bf16. The comparison ignores instruction names, source locations and the
name tables (the files moved), and prints the lines that still differ.
"""
import difflib
import pathlib
import re
import sys


def dump(out: pathlib.Path, old: bool) -> None:
  from benchmarks import throughput
  from rir_jax import data
  dataset = data.load_dataset("synthetic")
  out.mkdir(parents=True, exist_ok=True)
  for model in ("resnet", "rir"):
    for dtype in ("float32", "bfloat16"):
      kernels = {"conv_impl": "onednn"} if old else {"kernels": "cpu_library"}
      bench = throughput.JaxBench(throughput.bench_config(model, 128, dtype, {}, **kernels),
                                  dataset, 128)
      compiled = bench.trainer.compiled_step if old else bench.compiled_step
      (out / f"{model}_{dtype}.hlo").write_text(compiled.as_text())


def normalized(path: pathlib.Path) -> list[str]:
  text = path.read_text()
  text = text[text.index("\n%"):]  # from the first computation: past the name tables
  text = re.sub(r", metadata=\{[^}]*\}", "", text)
  text = re.sub(r"%[\w.\-]+", "%x", text)
  text = re.sub(r"stack_frame_id=\d+", "", text)
  return text.splitlines()


def compare(old: pathlib.Path, new: pathlib.Path) -> None:
  for before in sorted(old.glob("*.hlo")):
    a, b = normalized(before), normalized(new / before.name)
    changed = [line[:160] for line in difflib.unified_diff(a, b, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    print(f"{before.name}: {len(a)} and {len(b)} lines, {len(changed)} differ")
    print("\n".join(changed))


if __name__ == "__main__":
  if sys.argv[1] == "dump":
    dump(pathlib.Path(sys.argv[2]), sys.argv[3] == "old")
  else:
    compare(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
