"""Packaging beyond pyproject.toml: the top-level ``sim/`` and ``boards/`` folders ship as the
subpackages ``hwgen.sim`` and ``hwgen.boards`` (so the installed ``hwgen sim`` finds its cocotb
testbench), beside every package found under ``hwgen/``. pyproject.toml cannot say both."""

from setuptools import find_packages, setup

MAPPED = {"hwgen.sim": "sim", "hwgen.boards": "boards"}

setup(packages=find_packages(include=["hwgen", "hwgen.*"]) + list(MAPPED), package_dir=MAPPED)
