"""Fast recipes: the least wall time to a target test accuracy on a 2-core CPU.

  python -m benchmarks.time_to_accuracy --preset=mnist --manual_dir=../shared/data/mnist
  python launch.py --config=configs/fast.py:dataset=mnist --workdir=runs/fast_mnist \
      --config.data.manual_dir=../shared/data/mnist --config.stop_at_accuracy=0.995

For the time-to-accuracy goals of benchmarks/time_to_accuracy.py: MNIST >= 99.5% test
accuracy in <= 90 s, Fashion-MNIST >= 93% in <= 5 minutes, compile included. The budget is
so short that the recipe trades the project's 0.27M-parameter models for a cheaper one
that still sees the whole digit before its global average pool: a ResNet of 4 stages (28,
14, 7, 4 pixels) of one 2-layer residual block each, 16/32/64/128 channels (the `rir`
model's plain layers, 0.31M parameters, ~11M multiply-adds per image: 2.5x less than the
CNN of configs/cnn_mnist.py, whose first stage alone runs 6 convolutions at 28x28). Batch
64 (more updates per epoch than 128 at about the same images/s on a CPU), SGD with Nesterov
momentum, cosine to zero over the budget (MNIST: lr 0.2 after 0.3 epochs of warm-up;
Fashion-MNIST: lr 0.1), label smoothing 0.1, bfloat16. No augmentation: MNIST has none in
this project.

Measured on a quiet 2-core CPU (benchmarks/results/tta_*, 3 seeds): MNIST ends its 2.25
epochs at 99.58-99.61% in a median 83.7 s, ~1,900 img/s; Fashion-MNIST reaches 93% at
epoch 6 of 8 (93.06-93.37%) in a median 213 s. benchmarks/README.md says how the MNIST
budget was chosen.
"""
from __future__ import annotations

from configs import default

# dataset -> (epochs, evaluate every this many epochs, peak learning rate, warm-up epochs):
# the target is reached as the learning rate anneals, near the end, so earlier evals are
# few (each costs ~0.15 epoch). MNIST's warm-up lets it take lr 0.2 (without one, 0.2
# diverges), which reaches 99.5% in fewer epochs.
BUDGETS = {"mnist": (2.25, 2.25, 0.2, 0.3), "fashion_mnist": (8.0, 1.0, 0.1, 0.0)}


def get_config(arg: str | None = None):
  args = default.parse_arg(arg, dataset="mnist")
  if args.dataset not in BUDGETS:
    raise ValueError(f"configs/fast.py takes dataset={'|'.join(BUDGETS)}, got {args.dataset}")
  config = default.get_config()
  config.model = default.model_config("rir", widths=(8, 16, 32, 64), blocks_per_stage=(1, 1, 1, 1),
                                      block="plain", outer_shortcut=True)
  config.data.name = args.dataset
  config.batch_size = 64
  (config.num_epochs, config.eval_every_epochs, config.optimizer.learning_rate,
   config.schedule.warmup_epochs) = BUDGETS[args.dataset]
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "cosine"
  config.schedule.boundaries_epochs = ()
  config.label_smoothing = 0.1
  config.dtype = "bfloat16"
  config.checkpoint_every_steps = 10_000
  return config
