"""Estimators from JSON specs, through an exact-name allowlist only.

The one implementation lives in the client package (:mod:`memogrid.spec`),
so that what a client can express and what the service builds never drift
apart; this module re-exports it under the service's historical name. See
:mod:`memogrid.spec` for the format and the safety rules (nothing is
imported by a name taken from a request; every refusal is a
:class:`SpecError` naming the offending item by its path).
"""

from __future__ import annotations

from memogrid.spec import (
    DEFAULT_DISTRIBUTIONS,
    DEFAULT_FUNCTIONS,
    Allowlist,
    SpecError,
    build_distributions,
    build_estimator,
    build_grid,
    build_value,
)

__all__ = [
    "DEFAULT_DISTRIBUTIONS",
    "DEFAULT_FUNCTIONS",
    "Allowlist",
    "SpecError",
    "build_distributions",
    "build_estimator",
    "build_grid",
    "build_value",
]
