"""Waiting for something outside prodclone to finish: one loop, two ways to run it.

A ``check`` returns ``None`` while the thing is not done and its result when it is; it raises to
stop the wait. ``transient`` says which exceptions mean "ask again" (a dropped connection, a 5xx),
which are logged and retried until the deadline. The synchronous ``Poll.run`` and the asynchronous
``Poll.run_async`` (Airflow triggers, in the triggerer) share everything but how they sleep.

The deadline is wall-clock time (``time.time()``), not monotonic, because a deferred wait is
serialized and resumed by another process, possibly on another machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from prodclone.errors import ProdcloneError

T = TypeVar("T")
log = logging.getLogger(__name__)


class WaitTimeout(ProdcloneError):
    """The thing waited for was not done by the deadline (it may still finish on its own)."""


def _never(_exc: BaseException) -> bool:
    return False


@dataclass
class Poll:
    what: str  # "Velero backup velero/prodclone-base-…": names the thing in logs and errors
    timeout: float  # seconds, for the error message
    every: float = 5.0
    deadline: float = 0.0  # time.time() after which the wait fails; 0: now + timeout
    transient: Callable[[BaseException], bool] = field(default=_never, repr=False)

    def __post_init__(self):
        if not self.deadline:
            self.deadline = time.time() + self.timeout

    def _expired(self) -> bool:
        return time.time() > self.deadline

    def timeout_error(self) -> WaitTimeout:
        return WaitTimeout(f"{self.what} is not done after {_duration(self.timeout)}; "
                           "it may still finish: look at it before retrying")

    def _retry(self, exc: BaseException) -> None:
        if not self.transient(exc):
            raise exc
        log.warning("polling %s failed (%s); retrying", self.what, exc)

    def run(self, check: Callable[[], T | None]) -> T:
        while True:
            try:
                result = check()
                if result is not None:
                    return result
            except Exception as exc:
                self._retry(exc)
            if self._expired():
                raise self.timeout_error()
            time.sleep(max(0.0, min(self.every, self.deadline - time.time())))

    async def run_async(self, check: Callable[[], Awaitable[T | None]]) -> T:
        while True:
            try:
                result = await check()
                if result is not None:
                    return result
            except Exception as exc:
                self._retry(exc)
            if self._expired():
                raise self.timeout_error()
            await asyncio.sleep(max(0.0, min(self.every, self.deadline - time.time())))


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f}s"
