"""rir-jax: ResNet in ResNet, pre-activation ResNets and a plain CNN in JAX/Flax.

`model, variables, preprocess = rir_jax.load(workdir_or_exported_file, step="best")`
"""


def load(path, step="best", *, kernels=None, conv_impl=None):
  """(model, variables, preprocess) of a trained workdir or export; see rir_jax.loading.load."""
  from rir_jax import loading  # lazily: importing the package must not start JAX
  return loading.load(path, step, kernels=kernels, conv_impl=conv_impl)
