"""Compiled CPU kernels for the conv ops (backends/cpu/). Filled in by its own change."""

CPU_CONV_KERNELS = {}
