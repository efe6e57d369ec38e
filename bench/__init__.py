"""Benchmarks of the clearing core (`make bench-ledger`); see bench/README.md."""
