"""hwgen: trained multiplication-free networks to verified FPGA accelerators."""

__version__ = "0.1.0"
