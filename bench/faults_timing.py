"""Issue 12, item 8: no enumeration by timing.

One worker at the default argon2 cost (what production runs), throttles wide open. Kinds of
request, `attempts` of each, one at a time over one kept-alive connection, in blocks holding
one of each kind in a shuffled order (so whatever else the machine does falls on every kind
alike):

    login unknown   a name no account has (a new one each time), a wrong password
    login wrong     the known account's name, a wrong password
    register taken  the known account's email, a new username
    register free   a new email and a new username

With the default email verification (optional) a taken email answers EMAIL_TAKEN, so its
timing tells nothing the answer does not; with USERGRAPH_EMAIL_VERIFICATION=required both
answer alike and timing is what is left, so the registration pair runs again on a server
configured so.

Reported per pair: the median latency (client side) of each kind, the ratio of the two
medians (larger / smaller) and a bootstrap 95% interval of that ratio. Goal: within 5%.
Pairs that must answer alike must answer byte for byte the same.
"""

from __future__ import annotations

import random
from pathlib import Path

from faults_support import (
    REGISTER,
    Answer,
    Client,
    Row,
    Store,
    client,
    codes,
    environment,
    median,
    migrate,
    percentile,
    start,
    stop_all,
)

WRONG = "a wrong password of the same length!!"
WARMUP = 5
GOAL = 1.05


class Kinds:
    def __init__(self, c: Client, known: str) -> None:
        self.c = c
        self.known = known
        self.n = 0

    async def attempt(self, kind: str) -> Answer:
        self.n += 1
        n, c, known = self.n, self.c, self.known
        if kind == "login unknown":
            return await c.login(f"nobody{known}{n}", WRONG)
        if kind == "login wrong":
            return await c.login(known, WRONG)
        email = f"{known}@example.com" if kind == "register taken" else f"free{known}{n}@x.org"
        variables = {"input": {"email": email, "username": f"{known}n{n}", "password": WRONG}}
        return await c.gql("register", REGISTER, variables)


async def measure(
    directory: Path,
    store: Store,
    *,
    name: str,
    known: str,
    kinds: list[str],
    attempts: int,
    **settings: str,
) -> dict[str, list[Answer]]:
    """attempts answers of each kind, interleaved, from a fresh server on store."""
    env = environment(store, cheap=False, **settings)
    server = start(name, env, directory)
    rng = random.Random(5)
    answers: dict[str, list[Answer]] = {kind: [] for kind in kinds}
    try:
        async with client(server.base_url, connections=1) as c:
            c.keep = False
            registered = await c.register(known)
            assert registered.code == "OK", registered.text
            measured = Kinds(c, known)
            for _ in range(WARMUP):
                for kind in kinds:
                    await measured.attempt(kind)
            for _ in range(attempts):
                block = list(kinds)
                rng.shuffle(block)
                for kind in block:
                    answers[kind].append(await measured.attempt(kind))
    finally:
        stop_all(server)
    return answers


def ratio_interval(a: list[float], b: list[float], rounds: int = 2000) -> tuple[float, float]:
    """A bootstrap 95% interval of median(b) / median(a), as larger over smaller: how far the
    measured ratio could be from the one a longer run would find."""
    rng = random.Random(11)
    ratios = []
    for _ in range(rounds):
        ma = median(rng.choices(a, k=len(a)))
        mb = median(rng.choices(b, k=len(b)))
        ratios.append(mb / ma)
    ratios.sort()
    low, high = ratios[int(rounds * 0.025)], ratios[int(rounds * 0.975)]
    if median(b) < median(a):
        low, high = 1 / high, 1 / low
    return low, high


def pair(
    label: str, answers: dict[str, list[Answer]], a: str, b: str, expected: dict[str, str]
) -> Row:
    row = Row(label)
    for kind in (a, b):
        row.count(answers[kind], expected=[expected[kind]])
    wrong = [x for kind in (a, b) for x in answers[kind] if x.code != expected[kind]]
    ms = {kind: [x.latency * 1000 for x in answers[kind]] for kind in (a, b)}
    medians = {kind: median(ms[kind]) for kind in (a, b)}
    ratio = max(medians.values()) / min(medians.values())
    low, high = ratio_interval(ms[a], ms[b])
    row.figure = (
        f"median {a} {medians[a]:.1f} ms, {b} {medians[b]:.1f} ms: {ratio:.3f}x "
        f"(95% {low:.3f}-{high:.3f})"
    )
    for kind in (a, b):
        row.note(
            f"{kind}: p10 {percentile(ms[kind], 10):.1f}, p50 {medians[kind]:.1f}, "
            f"p90 {percentile(ms[kind], 90):.1f} ms ({len(ms[kind])})"
        )
    if expected[a] == expected[b]:
        texts = {kind: {x.text for x in answers[kind]} for kind in (a, b)}
        if texts[a] != texts[b]:
            row.miss(f"they answer differently: {sorted(texts[a])[:1]} vs {sorted(texts[b])[:1]}")
    else:
        row.note(f"the answers differ by design ({expected[a]} vs {expected[b]})")
    if wrong:
        row.miss(f"unexpected answers: {codes(wrong)}")
    if ratio > GOAL:
        row.miss(f"medians differ by more than {GOAL - 1:.0%}")
    return row


async def timing(directory: Path, store: Store, *, attempts: int) -> list[Row]:
    migrate(environment(store), directory)
    optional = await measure(
        directory, store, name="timing", known="known", attempts=attempts,
        kinds=["login unknown", "login wrong", "register taken", "register free"],
    )  # fmt: skip
    required = await measure(
        directory, store, name="timing-required", known="needed", attempts=attempts,
        kinds=["register taken", "register free"], USERGRAPH_EMAIL_VERIFICATION="required",
    )  # fmt: skip
    optional_codes = {
        "login unknown": "INVALID_CREDENTIALS",
        "login wrong": "INVALID_CREDENTIALS",
        "register taken": "EMAIL_TAKEN",
        "register free": "OK",
    }
    required_codes = {"register taken": "OK", "register free": "OK"}
    return [
        pair("timing: login, unknown name vs wrong password", optional, "login unknown",
             "login wrong", optional_codes),
        pair("timing: register, taken vs free email", optional, "register taken",
             "register free", optional_codes),
        pair("timing: register, verification required", required, "register taken",
             "register free", required_codes),
    ]  # fmt: skip
