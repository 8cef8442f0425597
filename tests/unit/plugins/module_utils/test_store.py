"""The access modules' shared run: a store that does not answer yet is asked again until it does or the wait is over;
one that is not there (no network) is not waited for."""

from __future__ import annotations

import pytest
from ansible_collections.pliers.deploy.plugins.module_utils import _store

from ..clock import Clock

STORE = {"host": "postgres", "network": "pliers_backend", "image": "postgres:15"}
RESULT = {"changed": False, "reached": True, "actions": [], "notes": [], "prunable": []}


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(_store.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(_store.time, "sleep", clock.sleep)
    monkeypatch.setattr(_store, "reach", lambda *_: None)
    return clock


def answering_after(failures: int, error=None):
    """A bring that fails FAILURES times (psql's "could not translate host name" unless ERROR), then answers."""
    calls = []

    def bring(module, client, store, prune):
        calls.append(prune)
        if len(calls) <= failures:
            raise error or _store.client_failure(
                "psql", "postgres/pliers", 2, 'could not translate host name "postgres"', ("could not translate",)
            )
        return RESULT

    return bring, calls


def test_a_store_that_answers_is_brought_at_once(clock):
    bring, calls = answering_after(0)
    assert _store.brought(None, None, STORE, bring, True, 60) == RESULT
    assert calls == [True] and clock.slept == []


def test_a_store_that_answers_within_the_wait_is_brought(clock):
    bring, calls = answering_after(5)
    assert _store.brought(None, None, STORE, bring, False, 60) == RESULT
    assert len(calls) == 6 and clock.now == 5 * _store.ANSWER_RETRY_SECONDS


def test_a_store_that_does_not_answer_within_the_wait_fails_with_what_its_client_said(clock):
    bring, calls = answering_after(1000)
    with pytest.raises(_store.StoreNotAnswering) as raised:
        _store.brought(None, None, STORE, bring, False, 30)
    assert 'could not translate host name "postgres"' in raised.value.failure
    assert clock.now >= 30 and len(calls) == 30 // _store.ANSWER_RETRY_SECONDS + 1


def test_no_wait_reports_a_store_that_does_not_answer_at_once(clock):
    bring, calls = answering_after(1)
    with pytest.raises(_store.StoreNotAnswering):
        _store.brought(None, None, STORE, bring, False, 0)
    assert calls == [False] and clock.slept == []


@pytest.mark.parametrize(
    "error",
    [_store.StoreNotReached("no network pliers_backend", "network pliers_backend does not exist"),
     _store.StoreError("psql on postgres/pliers failed (exit 3): permission denied")],
    ids=["not there", "refused"],
)  # fmt: skip
def test_a_store_that_is_not_there_or_refuses_is_not_waited_for(clock, error):
    bring, calls = answering_after(1, error)
    with pytest.raises(type(error)):
        _store.brought(None, None, STORE, bring, False, 60)
    assert calls == [False] and clock.slept == []


def test_every_access_module_may_wait_and_waits_a_minute_by_default():
    spec = _store.store_argument_spec(host="postgres", port=5432, accounts={})
    assert spec["wait"] == {"type": "int", "default": _store.ANSWER_WAIT} and _store.ANSWER_WAIT == 60
