"""The optional compiled parts of retape (Cython).  Everything else is in pyproject.toml.

Each extension is optional: where it cannot be built (no C compiler, no Python headers) the
install goes on and retape uses the pure-Python code it was compiled from, with the same
results."""

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("shared.checks._shapes_c", ["shared/checks/_shapes_c.pyx"], optional=True),
    Extension("shared._book_c", ["shared/_book_c.pyx"], optional=True),
    Extension("shared._lane_c", ["shared/_lane_c.pyx"], optional=True),
]

COMPILED = cythonize(EXTENSIONS, language_level=3, quiet=True)
for ext in COMPILED:  # cythonize makes new Extensions and does not carry `optional` over
    ext.optional = True

setup(ext_modules=COMPILED)
