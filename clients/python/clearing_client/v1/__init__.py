"""Generated from proto/clearing/v1 by `make proto`. Do not edit."""
