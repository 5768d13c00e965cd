"""multilabel_jax: multi-label, massively multi-class losses, decoders and metrics in JAX."""

__version__ = "0.1.0"
