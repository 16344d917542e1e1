#!/usr/bin/env bash
# The two-device step of ab.py against throughput.py's one-device process, alternating, 3 times.
cd "$(dirname "$0")/../../.."
for i in 1 2 3; do
  python -m benchmarks.throughput --models=resnet --dtype=bfloat16 --no_torch --kernels=cpu_library 2>/dev/null | tail -1 | python -c "import json,sys; d=json.loads(sys.stdin.read()); print('one-device process', round(d['jax_images_per_sec'],1))"
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks.results.data_parallel_cores.ab resnet bfloat16 128 20 2>/dev/null | tail -1
done
