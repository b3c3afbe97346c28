"""Second factors against real `usergraph serve` processes, and the QR code read as a phone would.

(a) Replay across workers: one current TOTP code (or one recovery code) sent at the same moment
    on two challenges, to two servers on one PostgreSQL database (to one server on SQLite),
    opens exactly one session; the other request answers INVALID_CODE.
(b) A server whose data keys do not decrypt the stored secret signs no one in with it and
    leaks nothing.
(c) The qrCodeSvg the API answers, rendered in headless chromium and decoded with jsQR, reads
    back as the otpauthUri exactly, and its secret gives codes the server accepts.

TOTP codes come from tests/totp.py (RFC 6238 from hmac). The servers count steps on the real
clock: the codes used are of steps now-1, now and now+1, each newer than the account's last.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, migrate, postgres_database
from tests.system.processes import _ready, _start, server_env
from tests.totp import CONFIRM_TOTP, LOGIN, START_TOTP, STEP, VERIFY, code
from usergraph.db.engine import Database

pytestmark = pytest.mark.slow

BROWSER_DIR = Path(__file__).with_name("browser")
CHROMIUM = "/usr/bin/chromium"
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken user { username } userErrors { code } } }"""
ME = "{ me { username secondFactors { totpEnabled recoveryCodesRemaining } } }"
GENEROUS = {
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_ACCOUNT_LIMIT": "1000/minute",
    "USERGRAPH_EMAIL_IP_LIMIT": "100000/minute",
}
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=pytest.mark.skipif(
            not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)"
        ),
    ),
]
ACCOUNTS = 3  # per backend: each races two TOTP codes and one recovery code


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database: a SQLite file in tmp_path, or a throwaway PostgreSQL database."""
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    asyncio.run(migrate(url))
    yield url


def env_for(database_url: str, data_key: str, **variables: str) -> dict[str, str]:
    return server_env(database_url, USERGRAPH_DATA_KEYS=data_key, **GENEROUS, **variables)


class Api:
    """A GraphQL client of one server (its own connection)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def response(self, query: str, variables: dict[str, Any], token: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )

    def ok(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = self.response(query, variables or {}, token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def close(self) -> None:
        self.http.close()


@contextmanager
def servers(cwd: Path, envs: dict[str, dict[str, str]], clients: int) -> Iterator[list[Api]]:
    """One `usergraph serve` per name, each with its own environment, started side by side
    (output in cwd/<name>.log); once all are ready, `clients` clients (each its own
    connection), spread over the servers in turn."""
    with ExitStack() as stack:
        started = [(name, *_start(stack, cwd, env, name)) for name, env in envs.items()]
        for name, base_url, process in started:
            _ready(cwd, name, base_url, process)
        made = [Api(started[i % len(started)][1]) for i in range(clients)]
        for api in made:
            stack.callback(api.close)
        yield made


def current_step() -> int:
    return int(time.time() // STEP)


def away_from_a_step_edge() -> None:
    """Wait out the last 2 s of a step, so a code chosen now is judged in the same step."""
    into = time.time() % STEP
    if into > STEP - 2:
        time.sleep(STEP - into + 0.1)


@dataclass
class Enrolled:
    username: str
    secret: str
    recovery_codes: list[str]
    last_step: int  # the newest step used (the server refuses it and older ones)
    wins: dict[str, int] = field(default_factory=dict)  # which client (server) won each race

    def next_step(self) -> int:
        """The oldest step the server takes now that is newer than the last one used."""
        away_from_a_step_edge()
        step = max(self.last_step + 1, current_step() - 1)
        while step > current_step() + 1:  # the window is used up: wait for the next step
            time.sleep((step - 1) * STEP - time.time() + 0.1)
        self.last_step = step
        return step


def register_and_enroll(api: Api, username: str) -> Enrolled:
    account = {"email": f"{username}@example.com", "username": username}
    registered = api.ok(REGISTER, {"input": {**account, "password": DEFAULT_PASSWORD}})
    assert registered["register"]["userErrors"] == [], registered
    token = registered["register"]["accessToken"]
    started = api.ok(START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token)
    enrollment = started["startTotpEnrollment"]
    assert enrollment["userErrors"] == [], enrollment
    away_from_a_step_edge()
    step = current_step() - 1  # the oldest the server takes: leaves now and now+1 to race
    confirmed = api.ok(
        CONFIRM_TOTP, {"input": {"code": code(enrollment["secret"], step * STEP)}}, token
    )
    result = confirmed["confirmTotpEnrollment"]
    assert result["userErrors"] == [], result
    assert len(result["recoveryCodes"]) == 10
    return Enrolled(username, enrollment["secret"], result["recoveryCodes"], last_step=step)


def challenge(api: Api, username: str) -> str:
    data = api.ok(LOGIN, {"input": {"login": username, "password": DEFAULT_PASSWORD}})
    payload = data["login"]
    assert payload["accessToken"] is None and payload["userErrors"] == [], payload
    token: str = payload["secondFactorChallenge"]["token"]
    return token


def verify(api: Api, challenge_token: str, code_value: str) -> dict[str, Any]:
    data = api.ok(VERIFY, {"input": {"challengeToken": challenge_token, "code": code_value}})
    payload: dict[str, Any] = data["verifySecondFactor"]
    return payload


def race(pair: list[Api], challenges: list[str], codes: list[str]) -> list[dict[str, Any]]:
    """verify on pair[i] with challenges[i] and codes[i], the two released at one moment."""
    start = threading.Barrier(2)

    def send(i: int) -> dict[str, Any]:
        start.wait()
        return verify(pair[i], challenges[i], codes[i])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(send, range(2)))


def the_one_winner(results: list[dict[str, Any]], username: str) -> int:
    """Index of the request that opened a session; the other must answer INVALID_CODE."""
    winners = [i for i, r in enumerate(results) if r["accessToken"] is not None]
    assert len(winners) == 1, results
    [winner] = winners
    won, lost = results[winner], results[1 - winner]
    assert won["userErrors"] == [] and won["user"]["username"] == username, won
    assert won["refreshToken"] is not None, won
    assert (lost["accessToken"], lost["refreshToken"], lost["user"]) == (None, None, None), lost
    assert [(e["code"], e["field"]) for e in lost["userErrors"]] == [
        ("INVALID_CODE", ["input", "code"])
    ], lost
    return winner


def query_database(database_url: str, sql: str, **params: Any) -> Any:
    async def read() -> Any:
        db = Database.connect(database_url)
        try:
            async with db.read_sessionmaker() as s:
                return (await s.execute(text(sql), params)).scalar_one()
        finally:
            await db.dispose()

    return asyncio.run(read())


def sessions_of(database_url: str, username: str) -> int:
    count: int = query_database(
        database_url,
        "SELECT count(*) FROM sessions JOIN users ON users.id = sessions.user_id "
        "WHERE users.username = :username",
        username=username,
    )
    return count


def notices(database_url: str, username: str, kind: str) -> int:
    count: int = query_database(
        database_url,
        "SELECT count(*) FROM mail_outbox WHERE to_address = :address AND kind = :kind",
        address=f"{username}@example.com",
        kind=kind,
    )
    return count


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_code_sent_twice_at_once_opens_one_session(backend: str, tmp_path: Path) -> None:
    names = ["a"] if backend == "sqlite" else ["a", "b"]
    with database(backend, tmp_path) as database_url:
        env = env_for(database_url, Fernet.generate_key().decode())
        # On SQLite both requests of a race go to the one server, each on its own connection.
        with servers(tmp_path, dict.fromkeys(names, env), clients=2) as pair:
            accounts = [register_and_enroll(pair[0], f"racer{i}") for i in range(ACCOUNTS)]
            for account in accounts:
                assert sessions_of(database_url, account.username) == 1  # register's
                for round_ in range(2):
                    step = account.next_step()
                    same = code(account.secret, step * STEP)
                    challenges = [challenge(api, account.username) for api in pair]
                    results = race(pair, challenges, [same, same])
                    winner = the_one_winner(results, account.username)
                    account.wins[f"totp {round_}"] = winner
                    assert sessions_of(database_url, account.username) == 2 + round_
                    # The session works on either server.
                    for api in pair:
                        me = api.ok(ME, token=results[winner]["accessToken"])["me"]
                        assert me["username"] == account.username

                # One recovery code, spelt two ways (case and dashes do not matter).
                recovery = account.recovery_codes[0]
                challenges = [challenge(api, account.username) for api in pair]
                results = race(pair, challenges, [recovery.upper(), recovery.replace("-", "")])
                winner = the_one_winner(results, account.username)
                account.wins["recovery"] = winner
                assert results[winner]["user"]["secondFactors"]["recoveryCodesRemaining"] == 9
                assert sessions_of(database_url, account.username) == 4
                assert notices(database_url, account.username, "recovery_code_used") == 1

                # Neither server takes the used codes again, on a fresh challenge.
                for api in pair:
                    for used in (same, recovery):
                        again = verify(api, challenge(api, account.username), used)
                        assert [e["code"] for e in again["userErrors"]] == ["INVALID_CODE"], again
                assert sessions_of(database_url, account.username) == 4
    print(f"\n{backend}: the winning client of each race: {[a.wins for a in accounts]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_without_the_data_key_opens_no_session_and_leaks_nothing(
    backend: str, tmp_path: Path
) -> None:
    """The keeper has the data key the secret is encrypted with, the stranger another one."""
    key, other_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with database(backend, tmp_path) as database_url:
        # The sender stays off: on SQLite two processes should not both write in the background.
        keeper_env = env_for(database_url, key, USERGRAPH_MAIL_SENDER="false")
        stranger_env = env_for(database_url, other_key, USERGRAPH_MAIL_SENDER="false")
        both = {"keeper": keeper_env, "stranger": stranger_env}
        with servers(tmp_path, both, clients=2) as [keeper, stranger]:
            account = register_and_enroll(keeper, "ada")
            ciphertext = query_database(database_url, "SELECT secret_ciphertext FROM totp_factors")
            right = code(account.secret, account.next_step() * STEP)
            # The password step does not need the key; the code step cannot match.
            token = challenge(stranger, "ada")
            response = stranger.response(
                VERIFY, {"input": {"challengeToken": token, "code": right}}, None
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert "errors" not in body, body  # no internal error
            payload = body["data"]["verifySecondFactor"]
            assert payload["accessToken"] is None and payload["user"] is None, payload
            assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
                ("INVALID_CODE", ["input", "code"])
            ], payload
            assert sessions_of(database_url, "ada") == 1  # register's only
            # Nothing was used up: the keeper takes that very code.
            signed_in = verify(keeper, challenge(keeper, "ada"), right)
            assert signed_in["userErrors"] == [] and signed_in["accessToken"], signed_in
            # Recovery codes are stored hashed, not encrypted: the stranger takes those.
            recovered = verify(stranger, challenge(stranger, "ada"), account.recovery_codes[0])
            assert recovered["userErrors"] == [] and recovered["accessToken"], recovered
            assert stranger.ok(ME, token=recovered["accessToken"])["me"]["username"] == "ada"
            assert sessions_of(database_url, "ada") == 3
    # The operator is told, in the stranger's log; neither the answer nor the log shows the
    # secret, its ciphertext, a key or the code.
    log = (tmp_path / "stranger.log").read_text(errors="replace")
    assert "totp_secret_undecryptable" in log
    for secret in (account.secret, ciphertext, key, other_key, right):
        assert secret not in response.text and secret not in log


WHITE, BLACK = "#ffffff", "#000000"
RENDERINGS = ["as served", "scaled up 3x", "tilted, blurred, dimmed"]


@pytest.fixture(scope="module")
def qr_driver() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (playwright-core and jsQR run on Node.js)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    modules = BROWSER_DIR / "node_modules"
    if not all((modules / name).exists() for name in ("playwright-core", "jsqr")):
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return BROWSER_DIR / "qr.mjs"


@dataclass
class QrEnrollment:
    api: Api
    access_token: str
    enrollment: dict[str, Any]  # startTotpEnrollment's payload
    read: dict[str, Any]  # what qr.mjs saw: renderings by background, requests, consoleErrors


@pytest.fixture(scope="module")
def qr(qr_driver: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QrEnrollment]:
    """An enrollment started on a real server, its qrCodeSvg read in the browser once."""
    tmp_path = tmp_path_factory.mktemp("qr")
    with database("sqlite", tmp_path) as database_url:
        env = env_for(database_url, Fernet.generate_key().decode())
        with servers(tmp_path, {"qr": env}, clients=1) as [api]:
            account = {"email": "grace@example.com", "username": "grace"}
            registered = api.ok(REGISTER, {"input": {**account, "password": DEFAULT_PASSWORD}})
            token = registered["register"]["accessToken"]
            started = api.ok(START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token)
            enrollment = started["startTotpEnrollment"]
            assert enrollment["userErrors"] == [], enrollment
            done = subprocess.run(
                ["node", str(qr_driver)],
                input=json.dumps({"svg": enrollment["qrCodeSvg"], "backgrounds": [WHITE, BLACK]}),
                capture_output=True, text=True, timeout=90, cwd=BROWSER_DIR,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            read = json.loads(done.stdout.strip().splitlines()[-1])
            yield QrEnrollment(api, token, enrollment, read)


def test_the_qr_code_reads_as_the_otpauth_uri_and_its_secret_signs_in(qr: QrEnrollment) -> None:
    uri = qr.enrollment["otpauthUri"]
    assert qr.read["requests"] == [] and qr.read["consoleErrors"] == [], qr.read
    on_white = qr.read["renderings"][WHITE]
    assert [(r["name"], r["text"]) for r in on_white] == [(name, uri) for name in RENDERINGS]
    # What an authenticator app takes from it: issuer, account, secret.
    parts = urlsplit(on_white[0]["text"])
    query = parse_qs(parts.query, strict_parsing=True)
    assert (parts.scheme, parts.netloc, unquote(parts.path)) == (
        "otpauth",
        "totp",
        "/usergraph:grace",
    )
    assert query == {"secret": [qr.enrollment["secret"]], "issuer": ["usergraph"]}
    # The app's codes, computed from the scanned secret, turn TOTP on.
    confirmed = qr.api.ok(
        CONFIRM_TOTP, {"input": {"code": code(query["secret"][0])}}, qr.access_token
    )["confirmTotpEnrollment"]
    assert confirmed["userErrors"] == [] and len(confirmed["recoveryCodes"]) == 10, confirmed
    assert confirmed["user"]["secondFactors"]["totpEnabled"] is True


def test_the_qr_code_reads_on_a_black_page_too(qr: QrEnrollment) -> None:
    uri = qr.enrollment["otpauthUri"]
    on_black = qr.read["renderings"][BLACK]
    assert [(r["name"], r["text"]) for r in on_black] == [(name, uri) for name in RENDERINGS]
