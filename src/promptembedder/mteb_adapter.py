"""Deprecated import path, kept for one release: the mteb wrapper is `promptembedder.evaluation.mteb_model`."""

import warnings

from .evaluation.mteb_model import *  # noqa: F403
from .evaluation.mteb_model import MTEBModel  # noqa: F401

warnings.warn("promptembedder.mteb_adapter moved to promptembedder.evaluation.mteb_model; the old path goes in the "
              "next release", DeprecationWarning, stacklevel=2)
