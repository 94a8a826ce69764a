"""BatchedRead: requests waiting for the database thread are answered together, and never by a read
that began before they were made."""

from __future__ import annotations

import asyncio
import threading

import pytest

from marketing_agents.batching import BatchedRead


class Recorder:
    """A fetch that records each batch of keys it is given, and can be held inside the database thread."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, keys: list) -> dict:
        self.batches.append(sorted(keys))
        self.inside.set()
        assert self.release.wait(10), "the test never released the fetch"
        return {key: f"value of {key}" for key in keys if key != "missing"}


async def test_requests_waiting_together_are_one_batch_and_each_gets_its_own_answer():
    fetch = Recorder()
    read = BatchedRead(fetch, default="none")
    answers = await asyncio.gather(*(read.get(key) for key in ["a", "b", "a", "c", "missing"]))
    assert answers == ["value of a", "value of b", "value of a", "value of c", "none"]
    assert fetch.batches == [["a", "b", "c", "missing"]], "one fetch, each distinct key once"


async def test_a_request_made_while_a_batch_is_being_read_waits_for_the_next_read():
    fetch = Recorder()
    fetch.release.clear()
    read = BatchedRead(fetch)
    first = asyncio.ensure_future(read.get("a"))
    await asyncio.get_running_loop().run_in_executor(None, fetch.inside.wait, 10)  # the read of "a" began
    second = asyncio.ensure_future(read.get("a"))
    await asyncio.sleep(0)  # one turn of the loop: the second task runs up to its request (no timing)
    fetch.release.set()
    assert await first == await second == "value of a"
    assert fetch.batches == [["a"], ["a"]], "the later request was not answered by the earlier read"


async def test_a_failed_read_fails_every_request_of_its_batch_and_the_next_batch_works():
    calls = []

    def fetch(keys):
        calls.append(keys)
        if len(calls) == 1:
            raise ConnectionError("the database is down")
        return {key: key.upper() for key in keys}

    read = BatchedRead(fetch)
    outcomes = await asyncio.gather(read.get("a"), read.get("b"), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError]
    assert await read.get("a") == "A"


async def test_a_request_cancelled_while_waiting_leaves_the_others_answered():
    fetch = Recorder()
    fetch.release.clear()
    read = BatchedRead(fetch)
    gone, kept = asyncio.ensure_future(read.get("a")), asyncio.ensure_future(read.get("b"))
    await asyncio.get_running_loop().run_in_executor(None, fetch.inside.wait, 10)
    gone.cancel()
    fetch.release.set()
    assert await kept == "value of b"
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_key_answered_with_an_exception_fails_only_its_own_requests():
    read = BatchedRead(lambda keys: {key: ValueError(key) if key == "bad" else key.upper() for key in keys})
    bad, good = await asyncio.gather(read.get("bad"), read.get("good"), return_exceptions=True)
    assert isinstance(bad, ValueError) and good == "GOOD"


async def test_an_unhashable_key_is_refused_and_breaks_no_batch():
    read = BatchedRead(lambda keys: {key: key for key in keys})
    with pytest.raises(TypeError):
        await read.get(["not", "hashable"])
    assert await read.get("a") == "a"
