"""What runs on a device: the agent, its backends and the in-process target (stdlib + runtime)."""
