"""Load: wrk (with a Lua script written per run) and a probe for event-loop stalls."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

WRK_TIMEOUT = "30s"  # argon2 queues can be long; a timed-out request would drop out of the stats
SEPARATOR = "\x01"  # between the pieces of a body template

# Every script: POST with JSON, a response check counted per thread and summed in done(),
# and one machine-readable line with wrk's own statistics.
_COMMON = r"""
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = [==[@AGENT@]==]
local token = [==[@TOKEN@]==]
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

ok, bad, sample = 0, 0, ""

local function tally(good, body)
  if good then
    ok = ok + 1
  else
    bad = bad + 1
    if sample == "" then sample = string.sub(body, 1, 400) end
  end
end

local function split(text)
  local parts, start = {}, 1
  while true do
    local at = string.find(text, "\1", start, true)
    if not at then
      table.insert(parts, string.sub(text, start))
      return parts
    end
    table.insert(parts, string.sub(text, start, at - 1))
    start = at + 1
  end
end

function done(summary, latency, requests)
  local good, wrong, example = 0, 0, ""
  for _, t in ipairs(threads) do
    good = good + (t:get("ok") or 0)
    wrong = wrong + (t:get("bad") or 0)
    if example == "" then example = t:get("sample") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"ok":%d,"bad":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, good, wrong,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  io.write("SAMPLE " .. string.gsub(example, "\n", " ") .. "\n")
end
"""

# One body for every request; every response must equal the expected bytes.
_FIXED = r"""
wrk.body = [==[@BODY@]==]
local expected = [==[@EXPECTED@]==]

function response(status, headers, body)
  tally(status == 200 and body == expected, body)
end
"""

# A body per request from a template: pieces joined by a name (NAME below).
_TEMPLATED = r"""
local pieces = split([==[@TEMPLATE@]==])
local counter, tid = 0, 0

function init(args)
  tid = wrk.thread:get("id")
  math.randomseed(os.time() * 1000 + tid)
end

function request()
  counter = counter + 1
  local name = @NAME@
  return wrk.format(nil, nil, nil, table.concat(pieces, name))
end

function response(status, headers, body)
  tally(status == 200 and string.find(body, '"accessToken":"', 1, true) ~= nil, body)
end
"""

# A refresh per request, each with the refresh token the previous response handed out: run with
# one connection per thread (wrk's Lua state is per thread), so each connection holds its own
# token chain. A response without a new token (userErrors: the token was refused) is counted
# bad; its chain is broken, so every later request on that connection fails too.
_REFRESH = r"""
local tokens = split([==[@TOKENS@]==])
local pieces = split([==[@TEMPLATE@]==])
local token, tid = "", 0

function init(args)
  tid = wrk.thread:get("id")
  token = tokens[tid]
end

function request()
  return wrk.format(nil, nil, nil, table.concat(pieces, token))
end

function response(status, headers, body)
  local new = string.match(body, '"refreshToken":"([^"]+)"')
  if new ~= nil then token = new end
  tally(status == 200 and new ~= nil and string.find(body, '"userErrors":[]', 1, true) ~= nil, body)
end
"""

_PACED = r"""
function delay()
  return @PAUSE@
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    ok: int
    bad: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    sample: str = ""
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def failures(self) -> int:
        return self.bad + sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "req_per_s": round(self.rps, 1),
            "ok": self.ok,
            "bad": self.bad,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_ms_per_request": round(1000 * self.cpu_s / self.requests, 3)
            if self.requests
            else None,
            **({"bad_sample": self.sample} if self.bad else {}),
            **self.extra,
        }


def _render(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        if "]==]" in value:
            raise ValueError(f"{key} cannot be embedded in a Lua long string")
        template = template.replace(f"@{key}@", value)
    return template


def fixed_script(body: str, expected: bytes, *, token: str, agent: str, pause_ms: int = 0) -> str:
    script = _COMMON + _FIXED + (_PACED if pause_ms else "")
    values = {
        "TOKEN": token,
        "AGENT": agent,
        "BODY": body,
        "EXPECTED": expected.decode(),
        "PAUSE": str(pause_ms),
    }
    return _render(script, values)


def templated_script(body: dict[str, Any], placeholder: str, name_lua: str, *, agent: str) -> str:
    """A script whose every request is body with each placeholder replaced by name_lua's value.

    name_lua is a Lua expression; `counter` (requests so far in this thread) and `tid` (the
    thread's number) are in scope.
    """
    pieces = json.dumps(body, separators=(",", ":")).split(placeholder)
    values = {"TOKEN": "", "AGENT": agent, "TEMPLATE": SEPARATOR.join(pieces), "NAME": name_lua}
    return _render(_COMMON + _TEMPLATED, values)


def refresh_script(body: dict[str, Any], placeholder: str, tokens: list[str], *, agent: str) -> str:
    """A script that chains refresh tokens: thread n starts with tokens[n - 1] in body (in place
    of placeholder) and sends each response's refreshToken next. Run it with one connection per
    thread, as many threads as tokens."""
    if any(not token or SEPARATOR in token or '"' in token for token in tokens):
        raise ValueError("a refresh token must be a non-empty string without quotes")
    pieces = json.dumps(body, separators=(",", ":")).split(placeholder)
    values = {
        "TOKEN": "",
        "AGENT": agent,
        "TOKENS": SEPARATOR.join(tokens),
        "TEMPLATE": SEPARATOR.join(pieces),
    }
    return _render(_COMMON + _REFRESH, values)


def wrk_command() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    wrk = wrk_command()
    if wrk is None:
        return "missing"
    output = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (output.stdout or output.stderr).splitlines()[0].split(" Copyright")[0].strip()


class Wrk:
    """One wrk run, started in the background; result() waits for it and parses its line."""

    def __init__(
        self,
        url: str,
        script: str,
        *,
        connections: int,
        duration: float,
        threads: int = 1,
        cpus: set[int] | None = None,
    ) -> None:
        wrk = wrk_command()
        assert wrk is not None
        handle, self.script_path = tempfile.mkstemp(prefix="usergraph-bench-", suffix=".lua")
        with os.fdopen(handle, "w") as file:
            file.write(script)
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={WRK_TIMEOUT}",
            "--latency",
            "-s",
            self.script_path,
            url,
        ]

        def pin_wrk() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pin_wrk,  # before wrk starts its threads, so they inherit it
        )

    def result(self) -> WrkResult:
        stdout, stderr = self.process.communicate()
        Path(self.script_path).unlink(missing_ok=True)
        line = next((x for x in stdout.splitlines() if x.startswith("BENCH ")), None)
        if self.process.returncode != 0 or line is None:
            raise SystemExit(f"wrk failed ({self.process.returncode}):\n{stdout}\n{stderr}")
        data = json.loads(line[len("BENCH ") :])
        sample = next((x[7:] for x in stdout.splitlines() if x.startswith("SAMPLE ")), "")
        return WrkResult(
            requests=data["requests"],
            duration_s=data["duration_us"] / 1e6,
            ok=data["ok"],
            bad=data["bad"],
            errors=data["errors"],
            latency_ms={k: round(v / 1000, 3) for k, v in data["latency_us"].items()},
            sample=sample,
        )


class LagProbe(threading.Thread):
    """GET url every interval on one keep-alive connection; the latencies show loop stalls.

    A trivial endpoint answers as soon as the server's event loop gets to it, so its latency
    is the loop's lag plus a small constant (the probe runs outside the server process).
    """

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            client.get(self.url)  # connect first
            next_at = time.perf_counter()
            while not self._stop_event.is_set():
                started = time.perf_counter()
                try:
                    client.get(self.url).raise_for_status()
                    self.latencies.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    self.failures += 1
                next_at += self.interval
                self._stop_event.wait(max(0.0, next_at - time.perf_counter()))
                next_at = max(next_at, time.perf_counter() - self.interval)

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join()
        values = sorted(self.latencies)
        if not values:
            return {"samples": 0}
        return {
            "samples": len(values),
            "failures": self.failures,
            "p50_ms": round(1000 * statistics.median(values), 2),
            "p99_ms": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))], 2),
            "max_ms": round(1000 * values[-1], 2),
        }
