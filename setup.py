"""Only the compiled part of alert matching; everything else about the package is in pyproject.toml.

setup.py because declaring extension modules in pyproject.toml is still experimental in setuptools."""

from setuptools import Extension, setup

# Optional: where it cannot be built (no C compiler), bot/matching.py does the same work in Python, slower.
setup(ext_modules=[Extension("bot._scan", ["bot/_scan.c"], optional=True)])
