"""A transformer that kills the process fitting it: a crash no ``try`` can catch.

Operators may allow it in a test service through ``MEMOGRID_EXTRA_ESTIMATORS``.
"""

from __future__ import annotations

import os

from sklearn.base import BaseEstimator, TransformerMixin


class ExitingTransformer(TransformerMixin, BaseEstimator):
    def __init__(self, crash: bool = True):
        self.crash = crash

    def fit(self, X, y=None):
        if self.crash:
            os._exit(13)
        return self

    def transform(self, X):
        return X
