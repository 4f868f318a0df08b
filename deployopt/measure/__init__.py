"""Judging artifacts: accuracy budgets and verification, process-isolated benchmarks, the baseline gate, MACs."""
