"""thaw_source's resume of a paused replica: which failures are asked again. Replay that restarts after a long
pause cancels conflicting standby sessions at once, the resume's own among them (seen on real Celery workers in
tests/celery/); anything else fails at once."""

import psycopg
import pytest

from prodclone.db import connect
from prodclone.errors import ConnectionFailed
from prodclone.source import _recovery_conflict, resume_replica
from support import free_port


def test_a_statement_cancelled_by_replay_is_asked_again():
    assert _recovery_conflict(psycopg.errors.SerializationFailure("canceling statement due to conflict with recovery"))
    assert _recovery_conflict(psycopg.errors.DeadlockDetected("canceling statement due to conflict with recovery"))


def test_a_session_ended_by_replay_as_it_started_is_asked_again():
    # As prodclone.db.connect reports it: the FATAL at connect time has no SQLSTATE, only its message.
    with pytest.raises(ConnectionFailed) as caught:
        try:
            raise psycopg.OperationalError("connection failed: FATAL:  terminating connection due to conflict with recovery")
        except psycopg.OperationalError:
            raise ConnectionFailed("cannot connect to the source replica database") from None
    assert _recovery_conflict(caught.value)


def test_a_replica_that_is_down_is_not_retried():
    with pytest.raises(ConnectionFailed) as caught:
        connect(f"host=127.0.0.1 port={free_port()} user=nobody dbname=nothing", role="source replica")
    assert not _recovery_conflict(caught.value)


def test_resuming_a_server_that_is_not_a_replica_fails_at_once(pg):
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="recovery is not in progress"):
        resume_replica(pg, timeout=30)
