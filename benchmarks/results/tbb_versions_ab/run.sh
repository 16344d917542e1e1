#!/usr/bin/env bash
# oneTBB's version under the kernel library's oneDNN (the `onednn` extra pins tbb 2021.*):
# 2021.13.1 (a_*, as installed) against 2022.3.1 (b_*) and 2023.2.0 (c_*), each put in by
# LD_PRELOAD (libdnnl.so.3 needs libtbb.so.12; a preloaded one is the one it gets),
# processes alternating, JAX only, batch $BATCH (default 128; SIDES and ROUNDS pick the
# runs); from the repository root, the machine otherwise idle (PERFORMANCE.md, section 21).
# The wheels, unpacked:
#   pip download tbb==V --no-deps -d /tmp/tbbw/V && (cd /tmp/tbbw/V && unzip -q *.whl)
# Table: python -m benchmarks.throughput_ab --a='DIR/a_b128_r*.jsonl' --b='DIR/b_b128_r*.jsonl'
dir=benchmarks/results/tbb_versions_ab
batch=${BATCH:-128}
declare -A lib=([a]="" [b]=/tmp/tbbw/2022.3.1/tbb-2022.3.1.data/data/lib/libtbb.so.12
                [c]=/tmp/tbbw/2023.2.0/tbb-2023.2.0.data/data/lib/libtbb.so.12)
for r in ${ROUNDS:-1 2 3}; do
  for side in ${SIDES:-a b c}; do
    LD_PRELOAD=${lib[$side]} python -m benchmarks.throughput --models=resnet,rir \
        --dtype=float32,bfloat16 --batch=$batch --kernels=cpu_library --steps=30 --no_torch \
        --out=$dir/${side}_b${batch}_r$r.jsonl
  done
done
