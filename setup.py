"""The one compiled helper (invalidator/_rowwalk.c and _rowwalk_values.c); everything else is in
pyproject.toml.

Optional: where it does not build, the invalidator runs the pure-Python row walk it was
generated from (invalidator/rowparse.py), and ``invalidator --check`` says so.  ``make
test`` builds it, and tests/test_invalidator_fastrows.py fails when it is missing."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("invalidator._rowwalk", ["invalidator/_rowwalk.c", "invalidator/_rowwalk_values.c"],
                             depends=["invalidator/_rowwalk.h"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                             optional=True)])
