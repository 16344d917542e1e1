"""The back ends the models run on: XLA's own, or the project's CPU kernel library.

  select      which back end runs, chosen once per process; the modules the models get
  conv        2-D convolution on oneDNN (forward and both gradients, custom VJP)
  batch_norm  batch norm + ReLU differentiated by hand, its sums on the CPU kernels
  sharding    what the FFI kernels need inside a batch-sharded or vmapped jit
  build       the C++ library (csrc/*.cc): built with g++ on first use, cached, loaded
  record      which kernels a workdir's run trained on, kept across resumes
"""
