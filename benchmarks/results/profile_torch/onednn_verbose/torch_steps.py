"""Runs the PyTorch replica's step (eager or compiled) STEPS times after warm-up,
between two marks, for ONEDNN_VERBOSE=1 (see jax_steps.py)."""
import pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))  # the repository
from benchmarks import throughput, torch_models
from rir_jax import data
mode, dtype, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = throughput.bench_config("resnet", 128, dtype, {})
replica = torch_models.TrainStep(config, data.load_dataset("synthetic"), "cpu", compiled=mode == "compile")
for _ in range(8):
  replica.step()
print("MARK_START", flush=True)
for _ in range(steps):
  replica.step()
print("MARK_END", flush=True)
