"""What runs on the host: opening targets, SSH, the agent bundle, TFLite conversion, RTL simulation."""
