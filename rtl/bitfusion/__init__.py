"""Our Bit Fusion accelerator: SystemVerilog in sv/, its compiler, and the driver over the native harness."""
