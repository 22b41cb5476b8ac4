"""The compiled masking kernel, built by `pip install` (and so by `make install`) with the machine's C
compiler. optional=True: without a compiler the install still succeeds and prodclone masks in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("prodclone.masking._kernel", ["plugins/prodclone/masking/_kernel.c"],
                             extra_compile_args=["-O3", "-std=gnu11"], optional=True)])
