"""Analysis: the statistics behind the what-worked marts (A/B experiment results)."""
