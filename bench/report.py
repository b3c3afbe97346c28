"""What the benchmark measured, the summary (medians over rounds, ratios within rounds), the
targets from the issue and the printed table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import WrkResult

MIB = 1024
# The targets of issue 4, all ratios measured in one run (and two absolute limits), and of
# issue 13: against PostGraphile in the same rounds, and refreshes per core against Keycloak.
TARGETS = {
    "users": 0.35,
    "me": 0.8,
    "deep": 1.5,
    "storm_p99": 3.0,
    "loop_lag_ms": 50.0,
    "register": 0.8,
    "rss_mib": 150.0,
    "workers": 1.6,
    "peer_users": 0.7,
    "peer_typename": 0.35,
    "refresh_vs_keycloak": 1.0,
}
# Keycloak's sizing guide: one vCPU per 120 refresh-token requests per second.
KEYCLOAK_REFRESH_PER_CORE = 120.0


@dataclass
class Config:
    """How the run is set up (run.py's options); the report quotes it."""

    users: int
    rounds: int
    duration: float
    warmup: float
    connections: int
    storm_clients: int
    register_connections: int
    paced_connections: int
    pace_ms: int
    workers: int
    pin: bool
    quick: bool
    output: Path
    settings: dict[str, str] = field(default_factory=dict)  # --set, for every server
    peer: bool = True  # PostGraphile beside usergraph, unless --no-peer


@dataclass
class Measurements:
    """Every wrk run (one dict per round, scenario and app) and what was sampled beside."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    users_rss_peak_kib: int = 0
    peer_rss_peak_kib: int = 0
    # PostGraphile: its versions, or why it did not run ({"skipped": reason}).
    peer: dict[str, str] = field(default_factory=dict)
    hashing: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, round_: int, scenario: str, app: str, result: WrkResult) -> None:
        self.runs.append({"round": round_, "scenario": scenario, "app": app, **result.as_dict()})
        if result.failures:
            self.problems.append(
                f"round {round_} {scenario} {app}: {result.bad} wrong answers, errors "
                f"{result.errors}; e.g. {result.sample[:200]}"
            )

    def of(self, scenario: str, app: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["scenario"] == scenario and r["app"] == app]


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def _med(runs: list[dict[str, Any]], key: str) -> float:
    if key == "req_per_s":
        return _median([r["req_per_s"] for r in runs])
    if key == "ok_per_s":
        return _median([r["ok"] / r["duration_s"] for r in runs])
    if key == "cpu":
        return _median([r["cpu_ms_per_request"] or float("nan") for r in runs])
    if key == "conn":
        return _median(
            [
                r["db_connections_opened"] / r["requests"] if r["requests"] else float("nan")
                for r in runs
                if "db_connections_opened" in r
            ]
        )
    return _median([r["latency_ms"][key] for r in runs])


def _ratios(m: Measurements, scenario: str, a: str, b: str, key: str = "req_per_s") -> list[float]:
    by_round = {r["round"]: r for r in m.of(scenario, b)}
    out = []
    for run in m.of(scenario, a):
        other = by_round.get(run["round"])
        if other:
            x = run[key] if key == "req_per_s" else run["latency_ms"][key]
            y = other[key] if key == "req_per_s" else other["latency_ms"][key]
            out.append(x / y if y else float("nan"))
    return out


def _rounded(values: list[float], digits: int = 3) -> list[float]:
    return [round(v, digits) for v in values]


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(
    config: Config, m: Measurements, sql: dict[str, Any], hashing: dict[str, float]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}

    def row(scenario: str, app: str, rate: str = "req_per_s") -> dict[str, Any]:
        runs = m.of(scenario, app)
        return {
            "req_per_s": round(_med(runs, rate), 1),
            "p50_ms": round(_med(runs, "p50"), 2),
            "p99_ms": round(_med(runs, "p99"), 2),
            "cpu_ms_per_request": round(_med(runs, "cpu"), 3),
            "db_connections_per_request": round(_med(runs, "conn"), 3),
            "rounds": len(runs),
        }

    for scenario in ("me", "users", "deep"):
        summary[scenario] = {
            app: row(scenario, app) for app in ("usergraph", "floor") if m.of(scenario, app)
        }
        ratios = _ratios(m, scenario, "usergraph", "floor")
        summary[scenario]["ratio"] = round(_median(ratios), 3)
        summary[scenario]["ratios"] = _rounded(ratios)
    summary["typename"] = {"usergraph": row("typename", "usergraph")}
    summary["peer"] = m.peer
    for scenario in ("users", "deep", "typename"):
        if not m.of(scenario, "postgraphile"):
            continue
        summary[scenario]["postgraphile"] = row(scenario, "postgraphile")
        ratios = _ratios(m, scenario, "usergraph", "postgraphile")
        summary[scenario]["ratio_peer"] = round(_median(ratios), 3)
        summary[scenario]["ratios_peer"] = _rounded(ratios)
        cpu = {r["round"]: r["cpu_ms_per_request"] for r in m.of(scenario, "postgraphile")}
        summary[scenario]["cpu_vs_peer"] = round(
            _median(
                [
                    r["cpu_ms_per_request"] / cpu[r["round"]]
                    for r in m.of(scenario, "usergraph")
                    if r["cpu_ms_per_request"] and cpu.get(r["round"])
                ]
            ),
            2,
        )
    if m.peer_rss_peak_kib:
        summary["peer_rss_peak_mib"] = round(m.peer_rss_peak_kib / MIB, 1)
    refreshes = m.of("refresh", "usergraph")
    per_core = [r["ok_per_cpu_s"] for r in refreshes if r.get("ok_per_cpu_s")]
    summary["refresh"] = {
        **row("refresh", "usergraph", "ok_per_s"),
        "connections": refreshes[0]["connections"] if refreshes else 0,
        "failed": sum(r["bad"] + sum(r["errors"].values()) for r in refreshes),
        "cores_used": round(_median([r["cores_used"] for r in refreshes]), 3),
        "per_core": round(_median(per_core), 1),
        "per_core_rounds": per_core,
    }
    summary["refresh_vs_keycloak"] = round(
        summary["refresh"]["per_core"] / KEYCLOAK_REFRESH_PER_CORE, 3
    )
    summary["refresh_vs_keycloak_rounds"] = _rounded(
        [v / KEYCLOAK_REFRESH_PER_CORE for v in per_core]
    )
    deep_first = []
    by_round = {r["round"]: r for r in m.of("users", "usergraph")}
    for run in m.of("deep", "usergraph"):
        first = by_round.get(run["round"])
        if first:
            deep_first.append(run["latency_ms"]["p50"] / first["latency_ms"]["p50"])
    summary["deep_vs_first_p50"] = round(_median(deep_first), 3)
    summary["deep_vs_first_p50_rounds"] = _rounded(deep_first)
    summary["me_paced_alone"] = row("me paced", "usergraph")
    summary["me_paced_logins"] = row("me paced, logins", "usergraph")
    summary["login_storm"] = row("login storm", "usergraph", "ok_per_s")
    alone_p99 = {r["round"]: r["latency_ms"]["p99"] for r in m.of("me paced", "usergraph")}
    storm_ratios = [
        r["latency_ms"]["p99"] / alone_p99[r["round"]]
        for r in m.of("me paced, logins", "usergraph")
        if alone_p99.get(r["round"])
    ]
    summary["storm_p99_ratio"] = round(_median(storm_ratios), 2)
    summary["storm_p99_ratio_rounds"] = _rounded(storm_ratios, 2)
    summary["loop_lag_ms"] = {
        phase: {
            "p99": round(_median([p[phase].get("p99_ms", float("nan")) for p in m.probes]), 2),
            "max": max((p[phase].get("max_ms", 0.0) for p in m.probes), default=float("nan")),
        }
        for phase in ("alone", "storm", "control_alone", "control_storm")
    }
    summary["register"] = row("register", "usergraph", "ok_per_s")
    summary["register_vs_limit"] = round(
        summary["register"]["req_per_s"] / hashing["limit_per_s"], 3
    )
    summary["register_vs_limit_rounds"] = _rounded(
        [r["ok"] / r["duration_s"] / hashing["limit_per_s"] for r in m.of("register", "usergraph")]
    )
    flat_out = {h["round"]: h["per_s"] for h in m.hashing}
    summary["hashing_flat_out_per_s"] = round(_median(list(flat_out.values())), 2)
    summary["register_vs_flat_out"] = round(
        _median(
            [
                r["ok"] / r["duration_s"] / flat_out[r["round"]]
                for r in m.of("register", "usergraph")
                if flat_out.get(r["round"])
            ]
        ),
        3,
    )
    workers_label = f"{config.workers} workers"
    workers = _ratios(m, "users, workers", workers_label, "1 worker")
    summary["workers"] = {
        "1 worker": row("users, workers", "1 worker"),
        workers_label: row("users, workers", workers_label),
        "ratio": round(_median(workers), 3),
        "ratios": _rounded(workers),
    }
    summary["users_rss_peak_mib"] = round(m.users_rss_peak_kib / MIB, 1)
    return summary


def targets(config: Config, s: dict[str, Any]) -> list[dict[str, Any]]:
    lag = s["loop_lag_ms"]["storm"]["max"]
    control = s["loop_lag_ms"]["control_storm"]["max"]
    # (target, median, op, goal, unit, the value in each round)
    items: list[tuple[str, float, str, float, str, list[float]]] = [
        (
            "users page (50) vs floor, req/s",
            s["users"]["ratio"],
            ">=",
            TARGETS["users"],
            "x",
            s["users"]["ratios"],
        ),
        ("me vs floor, req/s", s["me"]["ratio"], ">=", TARGETS["me"], "x", s["me"]["ratios"]),
        (
            "deep page vs first page, p50 latency",
            s["deep_vs_first_p50"],
            "<=",
            TARGETS["deep"],
            "x",
            s["deep_vs_first_p50_rounds"],
        ),
        (
            f"me p99 while {config.storm_clients} clients log in vs alone",
            s["storm_p99_ratio"],
            "<=",
            TARGETS["storm_p99"],
            "x",
            s["storm_p99_ratio_rounds"],
        ),
        (
            f"event-loop lag during logins (max; idle control {control:.0f} ms)",
            lag,
            "<=",
            TARGETS["loop_lag_ms"],
            " ms",
            [],
        ),
        (
            "register vs hashing limit",
            s["register_vs_limit"],
            ">=",
            TARGETS["register"],
            "x",
            s["register_vs_limit_rounds"],
        ),
        (
            "RSS of the worker, users scenario (peak)",
            s["users_rss_peak_mib"],
            "<=",
            TARGETS["rss_mib"],
            " MiB",
            [],
        ),
        (
            f"users page, {config.workers} workers vs 1",
            s["workers"]["ratio"],
            ">=",
            TARGETS["workers"],
            "x",
            s["workers"]["ratios"],
        ),
    ]
    if "ratio_peer" in s["users"]:
        items.append(
            (
                "users page (50) vs PostGraphile, req/s",
                s["users"]["ratio_peer"],
                ">=",
                TARGETS["peer_users"],
                "x",
                s["users"]["ratios_peer"],
            )
        )
    if "ratio_peer" in s["typename"]:
        items.append(
            (
                "__typename vs PostGraphile, req/s",
                s["typename"]["ratio_peer"],
                ">=",
                TARGETS["peer_typename"],
                "x",
                s["typename"]["ratios_peer"],
            )
        )
    items.append(
        (
            f"refresh per core vs Keycloak's {KEYCLOAK_REFRESH_PER_CORE:.0f}/s",
            s["refresh_vs_keycloak"],
            ">=",
            TARGETS["refresh_vs_keycloak"],
            "x",
            s["refresh_vs_keycloak_rounds"],
        )
    )
    out = []
    for name, value, op, goal, unit, rounds in items:
        met = value == value and (value >= goal if op == ">=" else value <= goal)
        out.append(
            {
                "target": name,
                "value": value,
                "goal": f"{op} {goal}{unit}",
                "met": met,
                "rounds": rounds,
            }
        )
    return out


def report(
    config: Config,
    m: Measurements,
    sql: dict[str, Any],
    hashing: dict[str, float],
    summary: dict[str, Any],
    goals: list[dict[str, Any]],
) -> str:
    def stmts(app: str, name: str) -> tuple[str, str]:
        count = sql.get(app, {}).get(name)
        return (str(count["statements"]), str(count["round_trips"])) if count else ("", "")

    def fmt(value: float, digits: int = 1) -> str:
        return "n/a" if value != value else f"{value:.{digits}f}"

    def listed(values: list[float], digits: int = 2) -> str:
        return " ".join(fmt(v, digits) for v in values) or "n/a"

    peer = "ratio_peer" in summary["users"]
    header = ["scenario", "app", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "SQL/req", "RT/req"]
    rows = [[*header, "conn/req", "ug/floor", *(["ug/peer"] if peer else [])]]

    def line(
        label: str,
        app: str,
        r: dict[str, Any],
        sql_of: tuple[str, str],
        ratio: str,
        peer_ratio: str = "",
    ) -> None:
        # While logins run, the server's CPU time is mostly theirs: per me it would mislead.
        cpu = "" if app == "+logins" else fmt(r["cpu_ms_per_request"], 2)
        conn = r["db_connections_per_request"]
        rows.append(
            [
                label,
                app,
                fmt(r["req_per_s"]),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                cpu,
                *stmts(*sql_of),
                "" if conn != conn else f"{conn:.2f}",
                ratio,
                *([peer_ratio] if peer else []),
            ]
        )

    labels = {
        "me": "me",
        "users": "users first 50",
        "deep": "users deep 50",
        "typename": "__typename",
    }
    for scenario, label in labels.items():
        s = summary[scenario]
        for app in ("usergraph", "floor", "postgraphile"):
            if r := s.get(app):
                ours = app == "usergraph"
                ratio = f"{s['ratio']:.2f}x" if ours and "ratio" in s else ""
                peer_ratio = f"{s['ratio_peer']:.2f}x" if ours and "ratio_peer" in s else ""
                line(label, app, r, (app, scenario), ratio, peer_ratio)
    line("me, paced", "alone", summary["me_paced_alone"], ("usergraph", "me"), "")
    line("me, paced", "+logins", summary["me_paced_logins"], ("usergraph", "me"), "")
    line("login storm", "usergraph", summary["login_storm"], ("usergraph", "login"), "")
    line("register", "usergraph", summary["register"], ("usergraph", "register"), "")
    line("refresh", "usergraph", summary["refresh"], ("usergraph", "refresh"), "")
    for app, r in summary["workers"].items():
        if app not in ("ratio", "ratios"):
            line("users first 50", app, r, ("usergraph", "users"), "")
    lines = [_table(rows, right=set(range(2, len(rows[0])))), ""]
    lag = summary["loop_lag_ms"]
    refresh = summary["refresh"]
    lines += [
        "usergraph / floor, req/s, per round: "
        + "; ".join(f"{labels[n]} {listed(summary[n]['ratios'])}" for n in ("me", "users", "deep")),
    ]
    if peer:
        versions = summary["peer"]
        per_round = "; ".join(
            f"{labels[n]} {listed(summary[n]['ratios_peer'])}"
            for n in ("users", "deep", "typename")
            if "ratios_peer" in summary[n]
        )
        cpu = ", ".join(
            f"{labels[n]} {fmt(summary[n]['cpu_vs_peer'], 2)}x"
            for n in ("users", "deep", "typename")
            if "cpu_vs_peer" in summary[n]
        )
        lines += [
            f"usergraph / PostGraphile, req/s, per round: {per_round}",
            f"PostGraphile {versions.get('postgraphile')} on Node {versions.get('node')} (amber "
            "preset, production, one process, reading as postgres with no auth; usergraph "
            f"checks an admin's token on each page): CPU per request usergraph / PostGraphile: "
            f"{cpu}; RSS of its process during users/deep (peak): "
            f"{summary.get('peer_rss_peak_mib', 'n/a')} MiB",
        ]
    elif summary["peer"].get("skipped"):
        lines.append(f"PostGraphile: not run ({summary['peer']['skipped']})")
    lines += [
        f"refresh: {fmt(refresh['req_per_s'])}/s on {refresh['connections']} connections, each "
        f"chaining its own token; server CPU {fmt(refresh['cores_used'], 2)} cores of wall: "
        f"{fmt(refresh['per_core'])} refreshes per core-second (per round "
        f"{listed(refresh['per_core_rounds'], 1)}) = {fmt(summary['refresh_vs_keycloak'], 2)}x "
        f"Keycloak's {KEYCLOAK_REFRESH_PER_CORE:.0f}/s per core (PostgreSQL's CPU not counted); "
        f"{refresh['failed']} refused",
        f"deep page / first page latency (usergraph p50): {summary['deep_vs_first_p50']:.2f}x",
        f"me p99 with logins / alone: {summary['storm_p99_ratio']:.2f}x "
        f"(me paced: {config.paced_connections} connections, {config.pace_ms} ms pause)",
        "event-loop lag, measured from outside (usergraph has no hook for it yet): latency of "
        f"GET /healthz every 10 ms: alone p99 {fmt(lag['alone']['p99'], 2)} ms, max "
        f"{fmt(lag['alone']['max'], 2)} ms; during logins p99 {fmt(lag['storm']['p99'], 2)} ms, "
        f"max {fmt(lag['storm']['max'], 2)} ms. The same probe on the idle floor process "
        f"(the machine's own scheduling): alone p99 {fmt(lag['control_alone']['p99'], 2)} ms, "
        f"max {fmt(lag['control_alone']['max'], 2)} ms; during logins p99 "
        f"{fmt(lag['control_storm']['p99'], 2)} ms, max {fmt(lag['control_storm']['max'], 2)} ms",
        f"hashing limit: {hashing['cores']} cores / {hashing['hash_cpu_ms']} ms CPU per argon2 "
        f"hash = {hashing['limit_per_s']}/s (one hash takes {hashing['hash_wall_ms']} ms wall, "
        f"its 4 lanes in threads; cores / wall time would say {hashing['wall_formula_per_s']}/s; "
        f"{hashing['cores']} threads hashing flat out did {hashing['measured_parallel_per_s']}/s)",
        f"register: {summary['register']['req_per_s']}/s = "
        f"{summary['register_vs_limit']:.2f}x the hashing limit; "
        f"{summary['register_vs_flat_out']:.2f}x what {hashing['cores']} threads hashed flat out "
        f"in the same rounds ({summary['hashing_flat_out_per_s']}/s: the machine's load shows)",
        f"RSS of the usergraph worker during users/deep (peak): "
        f"{summary['users_rss_peak_mib']} MiB",
        f"users page, {config.workers} workers / 1 worker: {summary['workers']['ratio']:.2f}x",
        "",
    ]
    goal_rows = [["target", "measured", "goal", "", "per round"]]
    for g in goals:
        value = g["value"]
        unit = " MiB" if "MiB" in g["goal"] else " ms" if " ms" in g["goal"] else "x"
        goal_rows.append(
            [
                g["target"],
                f"{fmt(value, 2)}{unit}",
                g["goal"],
                "MET" if g["met"] else "NOT MET",
                listed(g["rounds"]) if g["rounds"] else "",
            ]
        )
    lines.append(_table(goal_rows, right={1}))
    return "\n".join(lines)
