"""Benchmarks of the clearing core (`make bench-ledger`); see bench/README.md."""

import clearing  # noqa: F401 - turns off gRPC fork support before grpc loads
