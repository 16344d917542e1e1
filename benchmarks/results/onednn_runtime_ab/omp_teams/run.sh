#!/usr/bin/env bash
# Interleaved A/B of a team size per call on oneDNN 3.2's GNU OpenMP build (section 11's
# lever), against the TBB build (this environment's python). The policies are an
# experiment's, not the library's: apply it first with
#   git apply benchmarks/results/onednn_runtime_ab/omp_teams/teams.patch
# and make VENV as ../run.sh says. RIR_OMP_TEAMS picks the policy of each OpenMP run:
#   one     a team of one while another call is in flight, all cores otherwise
#   serial  one call at a time (a mutex), all cores
#   all     every call all cores (section 11's plain OpenMP build)
#   single  every call a team of one (XLA's threads are the only parallelism)
# WAIT is OMP_WAIT_POLICY (passive: idle OpenMP threads sleep at once; "" for libgomp's
# default, which spins first: OMP_WAIT_POLICY left unset).
# Usage, from the repository root: bash .../omp_teams/run.sh VENV POLICIES MODELS OUT WAIT
# as run here (D=benchmarks/results/onednn_runtime_ab/omp_teams):
#   run.sh VENV "tbb one serial all" resnet,rir $D passive
#   run.sh VENV "tbb single" rir $D/rir_single passive
#   run.sh VENV "tbb one all" resnet,rir $D/default_wait_policy ""
# Table: python -m benchmarks.throughput_ab --a='OUT/tbb_r*.jsonl' --b='OUT/one_r*.jsonl'
venv=$1 policies=$2 models=$3 out=$4 wait=$5
mkdir -p "$out"
for round in 1 2; do
  for policy in $policies; do
    if [ "$policy" = tbb ]; then py=python; else py=$venv/bin/python; fi
    env ${wait:+OMP_WAIT_POLICY=$wait} RIR_OMP_TEAMS=$policy $py -m benchmarks.throughput \
      --models="$models" --dtype=bfloat16,float32 --kernels=cpu_library --no_torch \
      --steps=20 --eval_batch=256 --out="$out/${policy}_r${round}.jsonl"
  done
done
