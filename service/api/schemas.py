"""Request and response bodies, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

DatasetId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 content id")]
#: a scorer, metric or fit-parameter name (stored in 128-character columns)
Name = Annotated[str, Field(min_length=1, max_length=100)]
JobId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
JSONValue = Any


class DatasetOut(BaseModel):
    id: str
    kind: Literal["array", "text", "frame", "sparse"]
    shape: list[int]
    dtype: str | None = Field(None, description="numpy dtype string (arrays, sparse values)")
    columns: list[list[str]] | None = Field(None, description="[[name, arrow type], ...] (frames)")
    size: int = Field(description="bytes on disk")
    created_at: datetime


class JobRequest(BaseModel):
    """A search to run. Estimators and grid values use the JSON spec format."""

    model_config = ConfigDict(extra="forbid")

    estimator: dict[str, JSONValue] = Field(
        description='{"class": "sklearn.decomposition.PCA", "params": {...}}'
    )
    param_grid: dict[str, list[JSONValue]] | list[dict[str, list[JSONValue]]] | None = None
    param_distributions: dict[str, JSONValue] | list[dict[str, JSONValue]] | None = None
    n_iter: int = Field(10, ge=1, le=2**63 - 1)
    random_state: int | None = Field(None, ge=0, le=2**32 - 1)
    X: DatasetId
    x_order: Literal["C", "F"] | None = Field(
        None,
        description="memory order of the caller's X: the refit sees X in it, as "
        "scikit-learn's refit on X itself does (some estimators' last bits depend on it); "
        'for a DataFrame, "C" if it holds one number dtype laid out row by row, which '
        'its folds keep too. Absent: "C" for an array, "F" (pandas\' layout) for a frame',
    )
    y_order: Literal["C", "F"] | None = Field(
        None,
        description='"F" when the caller\'s y is a 2-D array laid out column by column: '
        "the refit sees y so, as scikit-learn's refit on y itself does",
    )
    y: DatasetId | None = None
    groups: DatasetId | None = None
    cv: int | dict[str, JSONValue] | None = Field(
        None,
        description="number of folds, a splitter spec, or explicit folds "
        '{"folds": <dataset id>, "sizes": [[n_train, n_test], ...]}: each fold\'s train '
        "then test row indices, one fold after the other, in an uploaded integer array; "
        "null means 5 (stratified for classifiers)",
    )
    scoring: Name | list[Name] | dict[Name, Name | dict[str, JSONValue]] | None = Field(
        None,
        description="a scorer name, a list of names, a dict of names or scorer specs, or a "
        'scorer spec {"make_scorer": {"function": "fbeta_score", "kwargs": {"beta": 2}, '
        '"greater_is_better": true, "response_method": "predict"}}',
    )
    refit: bool | Name = True
    error_score: Literal["raise", "nan", "inf", "-inf"] | StrictInt | float = Field(
        "nan",
        description='"raise", a number, or "nan", "inf", "-inf" (JSON has no such numbers); '
        "an integer stays one, as scikit-learn's warnings print it",
    )
    return_train_score: StrictBool = False
    fit_params: dict[Name, DatasetId | None] = Field(
        default_factory=dict,
        description="fit parameters (e.g. sample_weight) as dataset ids; null passes None",
    )
    sklearn_config: dict[Name, JSONValue] = Field(
        default_factory=dict,
        description="the caller's sklearn.set_config settings the search runs under "
        '(transform_output, assume_finite), e.g. {"transform_output": "pandas"}',
    )
    warning_filters: list[list[StrictStr | StrictInt]] = Field(
        default_factory=list,
        max_length=200,
        description="the caller's warnings filters up to the last whose action is "
        '"error", each [action, message regex, category name, module regex, line] '
        '(e.g. [["error", "", "Warning", "", 0]] for simplefilter("error")): the '
        "fits run under them, so a warning made an error fails its fit",
    )
    object_arrays: list[Literal["X", "y", "groups"]] = Field(
        default_factory=list,
        description="the datasets (string arrays) the caller held as object dtype, "
        "e.g. pandas labels: loaded as object, so that classes_ and predictions are "
        "object arrays as in scikit-learn",
    )


class JobAccepted(BaseModel):
    id: str
    url: str
    state: str


class Progress(BaseModel):
    """Distinct (candidate, split) results done of total; cache lookups of
    steps and results that hit, and those that missed; fits: the misses this
    search computed (the others were computed once for it and a search
    running at the same time, counted there)."""

    done: int
    total: int
    cache_hits: int
    cache_misses: int
    fits: int


class JobOut(BaseModel):
    id: str
    url: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    kind: Literal["grid", "random"]
    dataset: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    n_candidates: int
    n_splits: int
    progress: Progress
    cancel_requested: bool
    attempts: int
    waiting: str | None = Field(
        default=None,
        description="a queued or running job's (GET /v1/jobs/{id} only): what the service "
        "waits for before the job can go on (its dask scheduler, a worker)",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="a failed job's (GET /v1/jobs/{id} only): what the search warned about "
        "before it failed (a finished job's are in its results)",
    )
    warning_counts: dict[str, int] = Field(
        default_factory=dict,
        description="of a failed job's warnings, those that came more than once, by how often",
    )
    warning_sources: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description="of a failed job's warnings, where each was first raised: [module, file, line]",
    )


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class JobResults(BaseModel):
    id: str
    cv_results: dict[str, JSONValue] = Field(
        description="scikit-learn's cv_results_, columnar; see memogrid.wire"
    )
    best_index: int | None
    best_params: JSONValue = None
    best_score: float | str | None = Field(None, description='"NaN"/"Infinity" when not finite')
    refit_metric: str | None
    n_splits: int
    multimetric: bool
    has_estimator: bool
    warnings: list[str]
    stats: dict[str, JSONValue]
    request: dict[str, JSONValue] = Field(description="the job as submitted")


class SplitOut(BaseModel):
    candidate: int
    split: int
    test_scores: dict[str, float | str]
    train_scores: dict[str, float | str] | None
    fit_time: float
    score_time: float
    fit_failed: bool
    cached: bool


class CandidateOut(BaseModel):
    job_id: str
    candidate: int
    metric: str
    params: dict[str, JSONValue]
    mean_score: float | str | None = Field(
        description='"Infinity"/"-Infinity" when not finite; null for NaN'
    )
    std_score: float | str | None
    rank: int
    created_at: datetime


class CacheStats(BaseModel):
    entries: int
    volume: int = Field(description="bytes on disk")
    size_limit: int


class Health(BaseModel):
    status: str
    version: str
    schema_revision: str | None
    encodings: list[str] = Field(
        default_factory=list,
        description="the dataset content encodings this service hashes with "
        "(memogrid.data.ENCODINGS): a client on other ones computes other ids",
    )
