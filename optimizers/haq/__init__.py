"""HAQ: hardware-aware automated mixed-precision quantization against simulated accelerators."""
