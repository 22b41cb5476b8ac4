"""The one poll loop: results, transient errors, fatal errors and the deadline, both ways of running it."""

import asyncio
import time

import pytest

from prodclone.poll import Poll, WaitTimeout


def _answers(*values):
    it = iter(values)

    def check():
        v = next(it)
        if isinstance(v, BaseException):
            raise v
        return v

    return check


def test_returns_the_first_result_and_retries_transient_errors():
    p = Poll("thing", timeout=5, every=0.01, transient=lambda e: isinstance(e, ConnectionError))
    assert p.run(_answers(None, ConnectionError("dropped"), None, "done")) == "done"


def test_a_fatal_error_stops_the_wait_unchanged():
    p = Poll("thing", timeout=5, every=0.01, transient=lambda e: isinstance(e, ConnectionError))
    with pytest.raises(KeyError):
        p.run(_answers(None, KeyError("gone")))


def test_the_deadline_names_the_thing_and_the_time():
    p = Poll("Velero backup velero/b1", timeout=180, every=0.01, deadline=time.time() + 0.05)
    with pytest.raises(WaitTimeout, match=r"Velero backup velero/b1 is not done after 3 minutes"):
        p.run(lambda: None)


def test_the_async_loop_behaves_the_same():
    async def check_from(sync_check):
        return sync_check()

    answers = _answers(None, OSError("reset"), "ok")
    p = Poll("thing", timeout=5, every=0.01, transient=lambda e: isinstance(e, OSError))
    assert asyncio.run(p.run_async(lambda: check_from(answers))) == "ok"
    late = Poll("thing", timeout=1, every=0.01, deadline=time.time() + 0.05)
    with pytest.raises(WaitTimeout):
        asyncio.run(late.run_async(lambda: check_from(lambda: None)))
