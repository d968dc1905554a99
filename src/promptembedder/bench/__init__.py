"""The demo and the benchmarks (training, encoding, convergence, serving, the GPU sweep) and the quick suite."""
