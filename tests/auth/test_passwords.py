"""PasswordHasher: argon2id hashes, upgrades of old hashes, work kept off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import anyio
import pytest
from passlib.hash import bcrypt

from usergraph.auth.passwords import HASHING_NICENESS, HasherBusy, PasswordHasher

PASSWORD = "correct horse battery staple"
# Cheap costs: these tests check behaviour, not cost.
CHEAP = {"time_cost": 1, "memory_cost_kib": 1024, "parallelism": 1}


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(**CHEAP, concurrency=2)


async def test_hash_and_verify_round_trip(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    verification = await hasher.verify(PASSWORD, stored)
    assert verification.ok
    # A hash made with the current costs needs no upgrade.
    assert verification.new_hash is None


async def test_each_hash_is_salted(hasher: PasswordHasher) -> None:
    first, second = await hasher.hash(PASSWORD), await hasher.hash(PASSWORD)
    assert first != second
    assert (await hasher.verify(PASSWORD, first)).ok
    assert (await hasher.verify(PASSWORD, second)).ok


@pytest.mark.parametrize("attempt", ["correct horse battery stapler", "", PASSWORD.upper()])
async def test_wrong_password_is_refused(hasher: PasswordHasher, attempt: str) -> None:
    stored = await hasher.hash(PASSWORD)
    verification = await hasher.verify(attempt, stored)
    assert not verification.ok
    assert verification.new_hash is None


@pytest.mark.parametrize(
    "old_costs",
    [
        {"time_cost": 2, "memory_cost_kib": 1024, "parallelism": 1},
        {"time_cost": 1, "memory_cost_kib": 2048, "parallelism": 1},
        {"time_cost": 1, "memory_cost_kib": 1024, "parallelism": 2},
    ],
    ids=["time_cost", "memory_cost", "parallelism"],
)
async def test_hash_with_other_argon2_costs_is_upgraded(
    hasher: PasswordHasher, old_costs: dict[str, int]
) -> None:
    old_hash = await PasswordHasher(**old_costs).hash(PASSWORD)
    verification = await hasher.verify(PASSWORD, old_hash)
    assert verification.ok
    assert verification.new_hash is not None
    assert verification.new_hash != old_hash
    assert verification.new_hash.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    # The upgraded hash holds the same password and is current.
    upgraded = await hasher.verify(PASSWORD, verification.new_hash)
    assert upgraded.ok
    assert upgraded.new_hash is None


async def test_bcrypt_hash_verifies_and_is_upgraded_to_argon2(hasher: PasswordHasher) -> None:
    old_hash = bcrypt.using(rounds=4).hash(PASSWORD)
    assert old_hash.startswith("$2b$")
    verification = await hasher.verify(PASSWORD, old_hash)
    assert verification.ok
    assert verification.new_hash is not None
    assert verification.new_hash.startswith("$argon2id$")
    assert (await hasher.verify(PASSWORD, verification.new_hash)).ok


async def test_wrong_password_against_old_hash_gives_no_new_hash(hasher: PasswordHasher) -> None:
    old_hash = bcrypt.using(rounds=4).hash(PASSWORD)
    verification = await hasher.verify("not the password", old_hash)
    assert not verification.ok
    assert verification.new_hash is None


async def test_verify_dummy_spends_one_verification(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = hasher.verify

    async def recording_verify(password: str, stored_hash: str) -> Any:
        calls.append(stored_hash)
        return await original(password, stored_hash)

    monkeypatch.setattr(hasher, "verify", recording_verify)
    await hasher.verify_dummy(PASSWORD)
    await hasher.verify_dummy("another guess")
    assert len(calls) == 2
    # The same real argon2 hash each time, made once.
    assert calls[0] == calls[1]
    assert calls[0].startswith("$argon2id$")


class OverlapRecorder:
    """A stand-in for the blocking hash function that notes how many calls run at once.

    Each call waits for a second call to arrive, so calls that are allowed to overlap do overlap.
    patience bounds that wait: long when overlap is expected (it ends as soon as the second call
    arrives), short when it is not (the second call cannot arrive). The assertions never depend
    on how long anything took.
    """

    def __init__(self, result: Any, *, patience: float) -> None:
        self.result = result
        self.patience = patience
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0
        self.both_inside = threading.Event()
        self.saw_event_loop = False

    def __call__(self, *args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            self.saw_event_loop = True
        except RuntimeError:
            pass
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            if self.active >= 2:
                self.both_inside.set()
        self.both_inside.wait(timeout=self.patience)
        with self.lock:
            self.active -= 1
        return self.result


async def _run_twice_at_once(call: Any) -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        tasks.start_soon(call)


@pytest.mark.parametrize(("concurrency", "expected_most"), [(1, 1), (2, 2)])
async def test_hashing_runs_in_worker_threads_bounded_by_the_limiter(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, expected_most: int
) -> None:
    hasher = PasswordHasher(**CHEAP, concurrency=concurrency)
    recorder = OverlapRecorder("$argon2id$fake", patience=0.3 if concurrency == 1 else 30)
    monkeypatch.setattr(hasher._context, "hash", recorder)

    async def hash_once() -> None:
        assert await hasher.hash(PASSWORD) == "$argon2id$fake"

    await _run_twice_at_once(hash_once)
    assert not recorder.saw_event_loop
    assert recorder.most_active == expected_most


@pytest.mark.parametrize(("concurrency", "expected_most"), [(1, 1), (2, 2)])
async def test_verifying_runs_in_worker_threads_bounded_by_the_limiter(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, expected_most: int
) -> None:
    hasher = PasswordHasher(**CHEAP, concurrency=concurrency)
    recorder = OverlapRecorder((True, None), patience=0.3 if concurrency == 1 else 30)
    monkeypatch.setattr(hasher._context, "verify_and_update", recorder)

    async def verify_once() -> None:
        assert (await hasher.verify(PASSWORD, "$argon2id$fake")).ok

    await _run_twice_at_once(verify_once)
    assert not recorder.saw_event_loop
    assert recorder.most_active == expected_most


@pytest.mark.parametrize("stored", ["bcrypt-of-short", "$argon2id$garbage", "not a hash"])
async def test_an_uncheckable_hash_is_a_mismatch_not_an_error(
    hasher: PasswordHasher, stored: str
) -> None:
    # bcrypt refuses passwords over 72 bytes; a malformed stored hash cannot be checked at
    # all. Either must look like a wrong password, not an exception (which would answer
    # differently from an unknown account).
    if stored == "bcrypt-of-short":
        stored = bcrypt.hash("short password")
    result = await hasher.verify("x" * 80, stored)
    assert result.ok is False and result.new_hash is None


class Gate:
    """Stands in for a hash function: each call blocks its worker thread until opened."""

    def __init__(self, result: object) -> None:
        self.result = result
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, *_args: Any) -> object:
        self.entered.release()
        self.opened.wait(timeout=30)
        return self.result


@pytest.mark.parametrize(("concurrency", "queue"), [(1, 0), (1, 3), (2, 2)])
async def test_a_full_queue_refuses_at_once_instead_of_waiting(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, queue: int
) -> None:
    hasher = PasswordHasher(**CHEAP, concurrency=concurrency, queue=queue)
    gate = Gate("$argon2id$fake")
    monkeypatch.setattr(hasher._context, "hash", gate)
    async with anyio.create_task_group() as tasks:
        for _ in range(concurrency + queue):
            tasks.start_soon(hasher.hash, PASSWORD)
        for _ in range(concurrency):  # the running ones are inside; the rest are queued
            await anyio.to_thread.run_sync(gate.entered.acquire)
        await anyio.sleep(0.05)
        with pytest.raises(HasherBusy):
            await hasher.hash(PASSWORD)
        with pytest.raises(HasherBusy):
            await hasher.verify(PASSWORD, "$argon2id$fake")
        gate.opened.set()
    # Once the storm has passed, hashing works again.
    assert await hasher.hash(PASSWORD) == "$argon2id$fake"


async def test_a_password_no_hash_can_take_is_a_mismatch(hasher: PasswordHasher) -> None:
    # A lone surrogate cannot be encoded: a mismatch, even against the dummy hash, not a loop.
    stored = await hasher.hash(PASSWORD)
    assert not (await hasher.verify("\ud800", stored)).ok
    await hasher.verify_dummy("x")


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are a Unix feature")
async def test_hashing_threads_run_at_a_lower_priority(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So that on a busy machine the event loop still gets a core (the loop itself is untouched).
    seen: list[int] = []

    def record_priority(_password: str) -> str:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return "$argon2id$fake"

    monkeypatch.setattr(hasher._context, "hash", record_priority)
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    await hasher.hash(PASSWORD)
    assert seen == [max(os.getpriority(os.PRIO_PROCESS, 0), HASHING_NICENESS)]
    # Only the hashing thread was lowered: the event loop's thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_priority
