"""Benchmarks of DESIGN §8: each router scenario and its raw baseline, side by side in one run."""
