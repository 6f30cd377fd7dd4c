"""Estimators that record every real fit in a log file, across processes.

Each fit appends ``<ClassName>\\n`` to the file named by the environment
variable ``MEMOGRID_TEST_FIT_LOG`` (set before workers start), with
``O_APPEND`` so concurrent writers from threads and processes never mix.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

LOG_ENV = "MEMOGRID_TEST_FIT_LOG"


def record_fit(name: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)


def fit_counts(path: str | os.PathLike[str]) -> Counter[str]:
    p = Path(path)
    if not p.exists():
        return Counter()
    return Counter(line for line in p.read_text().splitlines() if line)


class CountingPCA(PCA):
    # PCA.fit_transform does not call fit, so each entry point counts once.
    def fit(self, X, y=None):
        record_fit("CountingPCA")
        return super().fit(X, y)

    def fit_transform(self, X, y=None):
        record_fit("CountingPCA")
        return super().fit_transform(X, y)


class SlowCountingPCA(CountingPCA):
    """A PCA slow enough that two searches submitted together overlap."""

    def fit_transform(self, X, y=None):
        time.sleep(0.3)
        return super().fit_transform(X, y)


class SleepyScaler(StandardScaler):
    """A scaler whose fit takes ``seconds`` (asleep: its worker answers meanwhile)."""

    def __init__(self, seconds=0.0):
        super().__init__()
        self.seconds = seconds

    def fit(self, X, y=None, sample_weight=None):
        record_fit(f"SleepyScaler-{self.seconds}-start")
        time.sleep(self.seconds)
        record_fit(f"SleepyScaler-{self.seconds}-end")
        return super().fit(X, y, sample_weight)


class GILHoldingScaler(StandardScaler):
    """A scaler whose fit backtracks through a regex of ``n`` characters
    first: minutes for n=32, with its worker's GIL held all along, so the
    worker answers nothing meanwhile (a hostile ``token_pattern``'s way)."""

    def __init__(self, n=0):
        super().__init__()
        self.n = n

    def fit(self, X, y=None, sample_weight=None):
        import re

        record_fit("GILHoldingScaler-start")
        re.match("(a+)+$", "a" * self.n + "b")
        return super().fit(X, y, sample_weight)


class CountingLogisticRegression(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        record_fit("CountingLogisticRegression")
        return super().fit(X, y, sample_weight=sample_weight)


class CountingScaler(StandardScaler):
    def fit(self, X, y=None, sample_weight=None):
        record_fit("CountingScaler")
        return super().fit(X, y, sample_weight=sample_weight)


class FailingClassifier(LogisticRegression):
    """A classifier whose every fit is logged, then fails with ``kind``:
    ``"value"`` a ValueError (the estimator's own refusal), ``"import"`` a
    ValueError raised from a missing module, ``"memory"`` a MemoryError,
    ``"warning"`` a warning raised as an error (as a filter set to
    "error" raises it); ``"none"`` fits."""

    def __init__(self, kind="value", C=1.0):
        super().__init__(C=C)
        self.kind = kind

    def fit(self, X, y, sample_weight=None):
        from sklearn.exceptions import ConvergenceWarning

        record_fit(f"FailingClassifier-{self.kind}")
        if self.kind == "none":
            return super().fit(X, y, sample_weight=sample_weight)
        if self.kind == "import":
            try:
                import memogrid_no_such_module  # type: ignore[import-not-found]  # noqa: F401
            except ModuleNotFoundError as exc:
                raise ValueError("this solver needs an optional library") from exc
        if self.kind == "memory":
            raise MemoryError("no room for the Gram matrix")
        if self.kind == "warning":
            raise ConvergenceWarning("did not converge")
        raise ValueError(f"kind={self.kind!r} refused")


class FailingTransformer(StandardScaler):
    """A transformer whose fit fails as :class:`FailingClassifier`'s does."""

    def __init__(self, kind="value"):
        super().__init__()
        self.kind = kind

    def fit(self, X, y=None, sample_weight=None):
        FailingClassifier(self.kind).fit(X, y)
        return super().fit(X, y, sample_weight=sample_weight)


class ThreadCountingLogisticRegression(LogisticRegression):
    """Fits run a joblib ``Parallel`` over its ``n_jobs`` as scikit-learn's
    ensembles do (threads preferred); ``score`` is how many threads it used."""

    def fit(self, X, y, sample_weight=None):
        import threading

        from sklearn.utils.parallel import Parallel, delayed

        def which() -> int:
            time.sleep(0.01)  # long enough that a pool would spread them
            return threading.get_ident()

        idents = Parallel(n_jobs=self.n_jobs, prefer="threads")(delayed(which)() for _ in range(16))
        self.fit_threads_ = len(set(idents))
        return super().fit(X, y, sample_weight=sample_weight)

    def score(self, X, y, sample_weight=None):
        return float(self.fit_threads_)
