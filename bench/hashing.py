"""The hashing limit: what one argon2 hash at usergraph's default cost takes on this machine.

Measured with usergraph's own PasswordHasher (passlib, argon2id at the Settings defaults, in a
worker thread), as the server hashes.
"""

from __future__ import annotations

import asyncio
import time

from seed import BENCH_PASSWORD

from usergraph.auth.passwords import PasswordHasher
from usergraph.settings import Settings


def default_hasher(concurrency: int = 1) -> PasswordHasher:
    defaults = Settings.model_fields
    return PasswordHasher(
        time_cost=defaults["argon2_time_cost"].default,
        memory_cost_kib=defaults["argon2_memory_cost_kib"].default,
        parallelism=defaults["argon2_parallelism"].default,
        concurrency=concurrency,
        queue=concurrency,
    )


async def _flat_out(threads: int, seconds: float) -> float:
    hasher = default_hasher(threads)
    deadline = time.perf_counter() + seconds
    done = 0

    async def hash_until_deadline() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await hasher.hash(BENCH_PASSWORD)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(hash_until_deadline() for _ in range(threads)))
    return done / (time.perf_counter() - started)


def hash_flat_out(threads: int, seconds: float) -> float:
    """Hashes per second with `threads` hashes always under way (argon2 frees the GIL)."""
    return asyncio.run(_flat_out(threads, seconds))


async def _one_hash_times() -> tuple[list[float], list[float]]:
    hasher = default_hasher()
    await hasher.hash(BENCH_PASSWORD)
    walls, cpus = [], []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        await hasher.hash(BENCH_PASSWORD)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def measure_hashing(cores: int, seconds: float) -> dict[str, float]:
    """One argon2 hash at the default cost, and the limit it sets: cores / its CPU time.

    argon2's lanes (parallelism 4) run in threads, so one hash takes more CPU time than wall
    time; process_time() counts every thread. `cores` hashes always under way for a while
    check the limit.
    """
    walls, cpus = asyncio.run(_one_hash_times())
    # The fastest of five: the cost of a hash itself, without what else the machine is doing.
    wall, cpu = min(walls), min(cpus)
    return {
        "cores": cores,
        "hash_wall_ms": round(1000 * wall, 1),
        "hash_cpu_ms": round(1000 * cpu, 1),
        "limit_per_s": round(cores / cpu, 2),
        "wall_formula_per_s": round(cores / wall, 2),
        "measured_parallel_per_s": round(hash_flat_out(cores, seconds), 2),
    }
