"""Load tests: scow measured beside its peers in one run. See ``python -m loadtests --help``."""
