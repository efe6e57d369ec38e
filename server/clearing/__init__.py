"""The clearing core: split payments booked in a double-entry ledger."""

__version__ = "0.1.0"
