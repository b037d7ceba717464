"""Reinforcement-learning parts shared by the optimizers (HAQ, AMC)."""
