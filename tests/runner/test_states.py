"""The job state machine accepts exactly the documented transitions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memogrid_service.runner.states import (
    TERMINAL,
    InvalidTransition,
    JobEvent,
    JobState,
    allowed_events,
    transition,
)

EXPECTED = {
    ("queued", "claim"): "running",
    ("queued", "cancel"): "cancelled",
    ("running", "succeed"): "succeeded",
    ("running", "fail"): "failed",
    ("running", "cancel"): "cancelled",
    ("running", "requeue"): "queued",
}


@pytest.mark.parametrize("state, event", list(itertools.product(JobState, JobEvent)))
def test_every_pair(state, event):
    key = (state.value, event.value)
    if key in EXPECTED:
        assert transition(state, event) is JobState(EXPECTED[key])
    else:
        with pytest.raises(InvalidTransition, match=f"cannot {event.value} a job that is"):
            transition(state, event)


def test_terminal_states_accept_nothing():
    for state in TERMINAL:
        assert state.terminal and allowed_events(state) == frozenset()
    assert not JobState.QUEUED.terminal and not JobState.RUNNING.terminal


@given(st.lists(st.sampled_from(list(JobEvent)), max_size=30))
def test_any_event_sequence_stays_in_the_machine(events):
    state = JobState.QUEUED
    for event in events:
        if event in allowed_events(state):
            new = transition(state, event)
            assert new is not state
            state = new
        else:
            with pytest.raises(InvalidTransition):
                transition(state, event)
    # once terminal, always terminal
    if state.terminal:
        assert all(e not in allowed_events(state) for e in JobEvent)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError):
        transition("paused", "claim")
    with pytest.raises(ValueError):
        transition("queued", "explode")
