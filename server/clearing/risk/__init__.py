"""Risk controls: risk policies, holds and events, ratio-swing checks, backtests."""
