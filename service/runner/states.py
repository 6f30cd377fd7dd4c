"""The job state machine, pure and small.

    queued ──claim──▶ running ──succeed──▶ succeeded
      │                 │  │
      │                 │  └──fail──▶ failed
      │                 ├──cancel──▶ cancelled
      │                 └──requeue──▶ queued      (its lease lapsed: the
      └──cancel──▶ cancelled                       runner holding it died)

Terminal states never change again, so a result written for a finished job
is final. Every transition the runner or an API route makes goes through
:func:`transition`, which refuses the rest with :class:`InvalidTransition`.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class JobEvent(StrEnum):
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    REQUEUE = "requeue"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

_TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.QUEUED, JobEvent.CLAIM): JobState.RUNNING,
    (JobState.QUEUED, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.RUNNING, JobEvent.FAIL): JobState.FAILED,
    (JobState.RUNNING, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.RUNNING, JobEvent.REQUEUE): JobState.QUEUED,
}


class InvalidTransition(ValueError):
    """An event that the job's current state does not allow."""

    def __init__(self, state: JobState, event: JobEvent):
        self.state, self.event = state, event
        super().__init__(f"cannot {event.value} a job that is {state.value}")


def transition(state: JobState | str, event: JobEvent | str) -> JobState:
    """The state after ``event``; raises :class:`InvalidTransition` if not allowed."""
    state, event = JobState(state), JobEvent(event)
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def allowed_events(state: JobState | str) -> frozenset[JobEvent]:
    """The events ``state`` accepts (none for a terminal state)."""
    state = JobState(state)
    return frozenset(e for (s, e) in _TRANSITIONS if s is state)
