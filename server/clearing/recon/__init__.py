"""Reconciliation: channel statements in (formats, parsing with limits), stored, and matched
against the splits in set-based SQL (docs/recon.md). No grpc nor generated code here."""
