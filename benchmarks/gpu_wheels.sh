#!/usr/bin/env bash
# Gets ready, here, what benchmarks/gpu_check.sh needs on a GPU machine that cannot reach
# the internet: wheels of the Python packages its image lacks (.whl/) and the JPEG CIFAR-10
# files (.gpu_data/cifar10_jpeg), both ignored by git (.git/info/exclude).
# That image has jax, flax, optax, orbax and torch for Python 3.12; the versions below are
# the ones this project's CPU environment runs.
#   bash benchmarks/gpu_wheels.sh [path/to/shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data}"
for ignored in /.whl/ /.gpu_data/; do
  grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
packages=(ml-collections==1.1.0 tensorflow-datasets==4.9.10 array-record==0.8.6 dm-tree==0.1.10
          immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0
          tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0
          toml==0.10.2 tensorboardX==2.6.5 importlib-resources==7.1.0)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${packages[@]}"
# Pure-Python packages published as source only: built into wheels here.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
mkdir -p .gpu_data
rm -rf .gpu_data/cifar10_jpeg && cp -r "$data/cifar10_jpeg" .gpu_data/
du -sh .whl .gpu_data
