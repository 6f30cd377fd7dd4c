"""One exception tree for everything memogrid raises.

    MemogridError
    ├── SpecError          an object or request the service cannot express or accept (422)
    ├── DataError          a dataset the client cannot hash or the service refuses
    ├── NotFound           no such dataset or job (404; also another user's)
    ├── AuthError          missing, wrong or expired token (401 / 403)
    ├── Conflict           not now: a job not finished, a dataset in use (409)
    ├── TooLarge           over a size limit (413)
    ├── RateLimited        too many requests or running jobs (429)
    ├── ServerError        the service failed (5xx)
    ├── TransportError     the service could not be reached
    ├── JobFailed          the job ended failed; ``.error`` is its reason
    ├── JobCancelled       the job was cancelled
    └── WaitTimeout        ``Job.wait(timeout=...)`` ran out

Errors from the service carry its problem message (``detail``) in their
text, the HTTP ``status`` and the problem's ``errors`` items.
"""

from __future__ import annotations

import builtins
from typing import Any


class MemogridError(Exception):
    """The root of every memogrid error."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, errors: Any = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.errors: list[dict[str, Any]] = list(errors or [])


class DataError(MemogridError, ValueError):
    """A dataset that cannot be hashed, uploaded or stored."""


class NotFound(MemogridError, LookupError):
    status = 404


class AuthError(MemogridError, PermissionError):
    status = 401


class Conflict(MemogridError):
    status = 409


class TooLarge(MemogridError):
    status = 413


class RateLimited(MemogridError):
    """Over a request rate or the running-jobs cap; ``retry_after`` is the
    service's advice in seconds (its Retry-After header), when it gave one."""

    status = 429
    retry_after: float | None = None


class ServerError(MemogridError):
    status = 500


class TransportError(MemogridError, ConnectionError):
    """The service could not be reached (after retries, for idempotent calls)."""


class JobFailed(MemogridError):
    """The job ended ``failed``; ``error`` holds the service's reason and
    ``warnings`` what the search warned about before it failed
    (``warning_counts``: those that came more than once, by how often)."""

    def __init__(
        self,
        job_id: str,
        error: str | None,
        warnings: list[str] | None = None,
        warning_counts: dict[str, int] | None = None,
        *,
        message: str | None = None,
        warning_sources: dict[str, list[Any]] | None = None,
    ):
        if message is None:
            super().__init__(f"job {job_id} failed: {error or 'no reason given'}")
        else:  # the error's own message, as scikit-learn raises it
            super().__init__(message)
            self.add_note(f"(raised by memogrid job {job_id}, which failed with it)")
        self.job_id = job_id
        self.error = error
        self.warnings = list(warnings or ())
        self.warning_counts = dict(warning_counts or {})
        self.warning_sources = dict(warning_sources or {})

    def __str__(self) -> str:
        # the text as given (a mixed-in KeyError would quote it again)
        return self.message

    def __reduce__(self) -> Any:
        # rebuilt by job_failed, with its mixed-in class (loky sends a failed
        # search's error back from a cross_val_score worker)
        return job_failed, (self.job_id, self.error, self._status())

    def _status(self) -> dict[str, Any]:
        return {
            "warnings": self.warnings,
            "warning_counts": self.warning_counts,
            "warning_sources": self.warning_sources,
        }


#: builtin exceptions a failed job's error may name, which :func:`job_failed`
#: mixes into the raised JobFailed (all of Exception's own layout)
_BUILTIN_ERRORS = (
    "ValueError",
    "TypeError",
    "KeyError",
    "IndexError",
    "LookupError",
    "AttributeError",
    "RuntimeError",
    "NotImplementedError",
    "ArithmeticError",
    "ZeroDivisionError",
    "FloatingPointError",
    "OverflowError",
)
#: the library exceptions a failed job's error may name (by qualified name,
#: as the service writes them), mixed in like the builtins: scikit-learn's
#: parameter check is a ValueError and a TypeError, NotFittedError a
#: ValueError and an AttributeError, numpy's LinAlgError a ValueError. A
#: fixed table of modules: nothing is imported by a name taken from input.
_LIBRARY_ERRORS = {
    "sklearn.utils._param_validation.InvalidParameterError": "sklearn.utils._param_validation",
    "sklearn.exceptions.NotFittedError": "sklearn.exceptions",
    "numpy.linalg.LinAlgError": "numpy.linalg",
    "numpy.linalg.linalg.LinAlgError": "numpy.linalg",
}
_mixed: dict[str, type[JobFailed]] = {}


def _error_class(name: str) -> type[BaseException] | None:
    """The exception class a failed job's error names, if one to mix in."""
    import builtins
    import importlib

    if name in _BUILTIN_ERRORS:
        return getattr(builtins, name)  # type: ignore[no-any-return]
    # a warning raised as an error (the caller's warnings filters made it one)
    short = name.rsplit(".", 1)[-1]
    where = _WARNING_CLASSES.get(short)
    if where is not None and (
        name == short
        if where == "builtins"
        else name.split(".", 1)[0] == where.split(".", 1)[0] and name.endswith("." + short)
    ):
        return warning_category(short)
    module = _LIBRARY_ERRORS.get(name)
    if module is None:
        return None
    try:
        found = getattr(importlib.import_module(module), name.rsplit(".", 1)[1], None)
    except ImportError:
        return None
    return found if isinstance(found, type) and issubclass(found, Exception) else None


def job_failed(job_id: str, error: str | None, status: dict[str, Any] | None = None) -> JobFailed:
    """The JobFailed to raise for a job that ended with ``error``.

    When the error names a builtin exception ("ValueError: All the 5 fits
    failed...", as scikit-learn raises it) or one of :data:`_LIBRARY_ERRORS`,
    the exception is an instance of that class too, with that error's own
    message (the job named in a note), so code written against
    scikit-learn's search (``except ValueError``, ``match=``) catches it as
    it would scikit-learn's. ``status`` is the
    job's status answer, with what it warned about before it failed.
    """
    text = error or ""
    name = text.split(":", 1)[0].strip()
    warned = (status or {}).get("warnings"), (status or {}).get("warning_counts")
    sources = (status or {}).get("warning_sources")
    cls = _mixed.get(name)
    if cls is None:
        base = _error_class(name)
        if base is None:
            return JobFailed(job_id, error, *warned, warning_sources=sources)
        short = name.rsplit(".", 1)[-1]
        cls = _mixed[name] = type(f"JobFailed{short}", (JobFailed, base), {})
    # "ValueError: <message>" as the service formats it: the message alone
    message = text[len(name) + 2 :] if text.startswith(name + ": ") else ""
    return cls(job_id, error, *warned, message=message, warning_sources=sources)


class JobCancelled(MemogridError):
    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class ClientClosed(MemogridError, RuntimeError):
    """A call on a :class:`~memogrid.Client` after it was closed (a search
    fitted in a ``with Client() as c:`` block keeps ``c``)."""


class WaitTimeout(MemogridError, TimeoutError):
    pass


#: the warning classes a warning recorded elsewhere (a worker, the service)
#: is raised again as, by name, and the fixed module each is found in; any
#: other is raised as a UserWarning
_WARNING_CLASSES = {
    # every warning class Python itself defines
    **{
        name: "builtins"
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, Warning)
    },
    "FitFailedWarning": "sklearn.exceptions",
    "InconsistentVersionWarning": "sklearn.exceptions",
    "ConvergenceWarning": "sklearn.exceptions",
    "UndefinedMetricWarning": "sklearn.exceptions",
    "DataConversionWarning": "sklearn.exceptions",
    "DataDimensionalityWarning": "sklearn.exceptions",
    "EfficiencyWarning": "sklearn.exceptions",
    "PositiveSpectrumWarning": "sklearn.exceptions",
    "LinAlgWarning": "scipy.linalg",
    "ComplexWarning": "numpy.exceptions",
    "RankWarning": "numpy.exceptions",
    "VisibleDeprecationWarning": "numpy.exceptions",
    "OptimizeWarning": "scipy.optimize",
    "ConstantInputWarning": "scipy.stats",
    "NearConstantInputWarning": "scipy.stats",
    "DegenerateDataWarning": "scipy.stats",
    "PerformanceWarning": "pandas.errors",
    "Pandas4Warning": "pandas.errors",
    "PandasFutureWarning": "pandas.errors",
    "SettingWithCopyWarning": "pandas.errors",
    "SparseEfficiencyWarning": "scipy.sparse",
}


def warning_category(name: str) -> type[Warning]:
    """The warning class called ``name`` in :data:`_WARNING_CLASSES` (else
    UserWarning): a fixed table of modules, never a name taken from input."""
    import importlib

    where = _WARNING_CLASSES.get(name)
    found: Any = None
    if where is not None:
        try:
            found = getattr(importlib.import_module(where), name, None)
        except ImportError:
            found = None
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    return UserWarning
