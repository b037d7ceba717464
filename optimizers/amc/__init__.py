"""AMC: reinforcement-learned channel pruning under FLOPs or measured-latency budgets."""
