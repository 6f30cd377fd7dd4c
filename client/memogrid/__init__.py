"""memogrid: a persistent, memoizing grid search for scikit-learn, as a service.

    from memogrid import Client, GridSearchCV, RandomizedSearchCV

``Client`` submits searches and reads their results; ``GridSearchCV`` and
``RandomizedSearchCV`` are drop-in replacements for scikit-learn's that run
on the service. Every error is a :class:`MemogridError`.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    AuthError,
    ClientClosed,
    Conflict,
    DataError,
    JobCancelled,
    JobFailed,
    MemogridError,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    TransportError,
    WaitTimeout,
)
from .spec import SpecError

__all__ = [
    "AuthError",
    "Client",
    "ClientClosed",
    "Conflict",
    "DataError",
    "GridSearchCV",
    "Job",
    "JobCancelled",
    "JobFailed",
    "MemogridError",
    "NotFound",
    "RandomizedSearchCV",
    "RateLimited",
    "ServerError",
    "SpecError",
    "TooLarge",
    "TransportError",
    "WaitTimeout",
]


def __getattr__(name: str) -> Any:
    # the client and the estimators import httpx and scikit-learn: only on use
    if name in ("Client", "Job"):
        from . import client

        return getattr(client, name)
    if name in ("GridSearchCV", "RandomizedSearchCV"):
        from . import search

        return getattr(search, name)
    raise AttributeError(f"module 'memogrid' has no attribute {name!r}")
