"""hil: hardware-in-the-loop latency tables and the optimizers that use them."""

__version__ = "0.1.0"
