"""rir-jax: ResNet in ResNet, pre-activation ResNets and a plain CNN in JAX/Flax."""
