"""cocotb testbenches run by :mod:`hwgen.simulate`."""
