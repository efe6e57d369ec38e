"""The double-entry ledger: accounts, the journal, balances and the group-commit writer."""
