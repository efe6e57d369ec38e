"""Payouts: bank accounts, withdrawals with fees and limits, the bank connector, the worker
and the scheduler. States and the life of a payout: see `clearing.payout.model`."""
