"""Compiled CPU kernels for the pool ops (backends/cpu/). Filled in by its own change."""

CPU_POOL_KERNELS = {}
