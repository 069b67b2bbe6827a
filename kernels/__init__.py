"""Fused log-prob and GRPO-loss kernels (installed as ``gadx.kernels``)."""
