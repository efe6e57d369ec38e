"""The test suite. Importing clearing first turns off gRPC fork support (see
clearing/__init__.py) before any test module loads grpc."""

import clearing  # noqa: F401
