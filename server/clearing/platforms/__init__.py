"""The operator's administration of the core (PlatformService behind it): platforms, their
API keys, payout configurations with maker-checker for fees, and the business calendar.
Domain code: no grpc, no generated code (tests/unit/test_domain_imports.py)."""
