"""BISMO-style bit-serial matrix multiplication overlay: SystemVerilog in sv/, driver in driver.py."""

from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bismo.driver import BismoAccelerator

__all__ = ["BismoAccelerator", "BismoConfig"]
