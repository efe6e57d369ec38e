"""Risk controls: the platform's risk policy (`model`, `policy_store`), the check on the
split path that holds a flagged receiver's share (`check`), the counters it reads (`counting`),
the risk events and their maker-checker resolution (`events`, `resolve`), the daily
ratio-swing job (`daily_swing`), and backtests of a rule set on past orders (`backtest`) with
the ratio swing at activation (`swing`). Imports neither grpc nor generated code. docs/risk.md."""
