"""The backtest: the planning step replayed over past days (see flows/backtest.py)."""
