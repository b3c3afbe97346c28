"""`usergraph keys generate|list|retire`: the signing keys in USERGRAPH_JWT_KEYS_DIR."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import NamedTuple, Self

import jwt
import pytest

from tests.client import serving
from tests.environment import TEST_DATA_KEY, TEST_SIGNING_KEY
from usergraph import cli
from usergraph.app import create_app
from usergraph.auth import keys as keys_module
from usergraph.auth.keys import RELOAD_SECONDS, KeyDirectory, KeySet, SigningKey
from usergraph.runtime import token_codec
from usergraph.settings import Settings
from usergraph.wellknown import CACHE_SECONDS, DISCOVERY_PATH, JWKS_PATH

# A kid is the RFC 7638 thumbprint's SHA-256 digest in lowercase hex.
KID = r"[0-9a-f]{64}"
GENERATED = re.compile(
    rf"^generated (ES256|EdDSA) key ({KID}): published now, signs new tokens from "
    r"(now|at (\S+))\n$"
)
PENDING = "published, signs from "


@pytest.fixture
def keys_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A development environment with no HS256 secret (so ES256) in tmp_path; returns the key
    directory (the default one, relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    # The CLI configures the root logger; keep pytest's log capture in place.
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    for name in list(os.environ):
        if name.startswith("USERGRAPH_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    return tmp_path / ".usergraph-keys"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *args])
    out, err = capsys.readouterr()
    return code, out, err


class Generated(NamedTuple):
    alg: str
    kid: str
    signs_from: datetime | None  # None: "signs new tokens from now"


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> Generated:
    """Run `keys generate`; return the algorithm, kid and signing time it printed."""
    code, out, err = run(capsys, "generate", *args)
    assert (code, err) == (0, ""), err
    match = GENERATED.match(out)
    assert match, out
    at = match.group(4)
    return Generated(match.group(1), match.group(2), datetime.fromisoformat(at) if at else None)


def record_of(directory: Path, kid: str) -> dict[str, str | None]:
    record: dict[str, str | None] = json.loads((directory / f"{kid}.json").read_text())
    return record


def statuses(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    return {row[0]: row[3] for row in listed(capsys)}


def signing_kid(keys: KeySet, now: datetime) -> str:
    key = keys.signing(now)
    assert key is not None, "no key signs"
    return key.kid


class Later(datetime):
    """The key module's clock, the JWKS cache time ahead: when a key generated now signs."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls.fromtimestamp(time.time() + CACHE_SECONDS, tz)


def listed(capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    code, out, err = run(capsys, "list")
    assert (code, err) == (0, ""), err
    return [re.split(r"\s{2,}", line) for line in out.splitlines()]


def test_generate_makes_an_es256_key_by_default(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alg, kid, signs_from = generate(capsys)
    assert alg == "ES256"
    # The first key: nothing else could sign, so it signs at once.
    assert signs_from is None
    file = keys_env / f"{kid}.json"
    assert file.stat().st_mode & 0o777 == 0o600
    assert keys_env.stat().st_mode & 0o777 == 0o700
    record = json.loads(file.read_text())
    assert record["alg"] == "ES256" and record["retired_at"] is None
    assert record["signs_from"] == record["created_at"]
    assert SigningKey.from_pem(record["private_key"]).kid == kid
    assert statuses(capsys) == {kid: "signing"}
    # The private key is in the file, never on the terminal.
    assert "PRIVATE KEY" not in capsys.readouterr().out


def test_generate_follows_the_algorithm_setting_and_the_option(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USERGRAPH_JWT_ALGORITHM", "EdDSA")
    assert generate(capsys)[0] == "EdDSA"
    assert generate(capsys, "--algorithm", "ES256")[0] == "ES256"
    assert sorted(key.alg for key in KeyDirectory(keys_env).load()) == ["ES256", "EdDSA"]


def test_generate_writes_to_the_configured_directory(
    keys_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "shared" / "keys"
    monkeypatch.setenv("USERGRAPH_JWT_KEYS_DIR", str(elsewhere))
    kid = generate(capsys, "--algorithm", "EdDSA").kid
    assert [file.name for file in elsewhere.iterdir()] == [f"{kid}.json"]
    assert not keys_env.exists()


def test_an_unknown_algorithm_is_refused(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["keys", "generate", "--algorithm", "RS256"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not keys_env.exists()


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"USERGRAPH_SIGNING_KEY": TEST_SIGNING_KEY}, id="signing key set"),
        pytest.param({"USERGRAPH_JWT_ALGORITHM": "HS256"}, id="algorithm HS256"),
    ],
)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="no option"),
        pytest.param(["--algorithm", "ES256"], id="--algorithm ES256"),
        pytest.param(["--algorithm", "EdDSA", "--now"], id="--algorithm EdDSA --now"),
    ],
)
def test_generate_with_hs256_configured_is_refused(
    keys_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    options: list[str],
) -> None:
    # Tokens are HS256 here: a key pair would be published but never sign, even if asked for.
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "generate", *options)
    assert code == 2 and out == ""
    assert err == (
        "error: tokens are HS256 here (USERGRAPH_SIGNING_KEY): set "
        "USERGRAPH_JWT_ALGORITHM=ES256 or EdDSA to sign with a key pair\n"
    )
    assert not keys_env.exists()


def test_generate_beside_an_hs256_secret_once_the_algorithm_is_a_key_pair(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Moving from HS256: the secret stays to verify old tokens, the pair signs.
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", TEST_SIGNING_KEY)
    monkeypatch.setenv("USERGRAPH_JWT_ALGORITHM", "EdDSA")
    alg, kid, signs_from = generate(capsys)
    assert (alg, signs_from) == ("EdDSA", None)
    assert [key.kid for key in KeyDirectory(keys_env).load()] == [kid]


def test_a_new_key_is_published_at_once_and_signs_after_the_jwks_cache_time(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Verifiers may keep the JWKS for CACHE_SECONDS: a token signed with a key they have not
    # fetched yet would be refused, so the new key signs only that much later.
    assert CACHE_SECONDS == 300
    first = generate(capsys).kid
    before = datetime.now(UTC)
    alg, second, signs_from = generate(capsys)
    assert signs_from is not None
    record = record_of(keys_env, second)
    assert record["created_at"] is not None and record["retired_at"] is None
    created = datetime.fromisoformat(record["created_at"])
    assert before <= created <= datetime.now(UTC)
    assert signs_from == created + timedelta(seconds=CACHE_SECONDS)
    assert record["signs_from"] == signs_from.isoformat()

    # `keys list` says so, and the servers (with the same settings) agree: the first key
    # signs until then, the second one from then on; both are published from now.
    assert statuses(capsys) == {first: "signing", second: f"{PENDING}{signs_from.isoformat()}"}
    ring = token_codec(Settings(_env_file=None)).ring.current  # type: ignore[call-arg]
    assert {key.kid for key in ring.keys} == {first, second}
    assert signing_kid(ring, datetime.now(UTC)) == first
    assert signing_kid(ring, signs_from - timedelta(microseconds=1)) == first
    assert signing_kid(ring, signs_from) == second
    assert [jwk["kid"] for jwk in ring.jwks(datetime.now(UTC))["keys"]] == [second, first]
    assert alg == "ES256"


def test_generate_now_signs_at_once(keys_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = generate(capsys).kid
    _alg, pending, pending_from = generate(capsys)
    alg, second, signs_from = generate(capsys, "--now", "--algorithm", "EdDSA")
    assert (alg, signs_from) == ("EdDSA", None)
    record = record_of(keys_env, second)
    assert record["signs_from"] == record["created_at"]
    assert pending_from is not None
    assert statuses(capsys) == {
        second: "signing",
        pending: f"{PENDING}{pending_from.isoformat()}",
        first: "verifying",
    }


def test_a_directory_without_a_live_key_gets_one_that_signs_at_once(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only retired keys: nothing signs but the new key, so there is nothing to wait for.
    directory = KeyDirectory(keys_env)
    old = directory.generate("ES256", now=datetime.now(UTC) - timedelta(days=1))
    directory.retire(old.kid)
    _alg, kid, signs_from = generate(capsys)
    assert signs_from is None
    assert statuses(capsys)[kid] == "signing"


def test_retiring_the_signing_key_while_the_new_one_waits_makes_the_new_one_sign(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With no live key ready to sign, the newest live key signs (nothing else could).
    first = generate(capsys).kid
    second = generate(capsys).kid
    assert run(capsys, "retire", first)[0] == 0
    listing = statuses(capsys)
    assert listing[second] == "signing"
    assert listing[first].startswith("retired, published until ")


def test_list_shows_every_key_newest_first_and_what_it_does(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USERGRAPH_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("USERGRAPH_JWT_LEEWAY_SECONDS", "5")
    assert listed(capsys) == []  # no directory yet: nothing to list, not an error
    directory = KeyDirectory(keys_env)
    now = datetime.now(UTC)
    long_gone = directory.generate("ES256", now=now - timedelta(days=3))
    directory.retire(long_gone.kid, now=now - timedelta(days=2))
    retired = directory.generate("EdDSA", now=now - timedelta(days=1))
    retired_at = now - timedelta(seconds=30)
    directory.retire(retired.kid, now=retired_at)
    older = directory.generate("ES256", now=now - timedelta(hours=1))
    newest = directory.generate("EdDSA", now=now - timedelta(minutes=10))
    # Waited long enough: it signs. Not yet: it is published only.
    waited = directory.generate(
        "EdDSA", now=now - timedelta(minutes=8), delay=timedelta(seconds=CACHE_SECONDS)
    )
    pending = directory.generate("ES256", now=now, delay=timedelta(seconds=CACHE_SECONDS))
    assert pending.signs_from == now + timedelta(seconds=CACHE_SECONDS)

    rows = listed(capsys)
    assert [row[0].split()[0] for row in rows] == [
        pending.kid,
        waited.kid,
        newest.kid,
        older.kid,
        retired.kid,
        long_gone.kid,
    ]
    for row in rows:
        assert re.fullmatch(KID, row[0]), row
    by_kid = {row[0]: row for row in rows}
    assert by_kid[pending.kid] == [
        pending.kid,
        "ES256",
        f"created {now.isoformat()}",
        f"{PENDING}{pending.signs_from.isoformat()}",
    ]
    assert by_kid[waited.kid] == [
        waited.kid,
        "EdDSA",
        f"created {waited.created_at.isoformat()}",  # type: ignore[union-attr]
        "signing",
    ]
    assert by_kid[newest.kid][1:] == [
        "EdDSA",
        f"created {newest.created_at.isoformat()}",  # type: ignore[union-attr]
        "verifying",
    ]
    assert by_kid[older.kid][1:] == [
        "ES256",
        f"created {older.created_at.isoformat()}",  # type: ignore[union-attr]
        "verifying",
    ]
    status = by_kid[retired.kid][3]
    assert status.startswith("retired, published until "), status
    until = datetime.fromisoformat(status.removeprefix("retired, published until "))
    # At least until its last tokens expired (lifetime + leeway), at most a reload interval
    # later (a worker may notice the retirement that late)...
    assert retired_at + timedelta(seconds=65) <= until
    assert until <= retired_at + timedelta(seconds=65 + RELOAD_SECONDS)
    # ...and exactly when the servers, with the same settings, stop verifying and publishing it.
    ring = token_codec(Settings(_env_file=None)).ring.current  # type: ignore[call-arg]
    [served] = [key for key in ring.keys if key.kid == retired.kid]
    assert ring.in_use(served, until - timedelta(microseconds=1))
    assert not ring.in_use(served, until)
    assert by_kid[long_gone.kid][3] == "retired, expired"


def test_retire_stops_a_key_signing(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = generate(capsys).kid
    new = generate(capsys, "--now").kid
    assert statuses(capsys) == {new: "signing", old: "verifying"}
    code, out, err = run(capsys, "retire", old)
    assert (code, err) == (0, "")
    assert out == (
        f"retired {old}: it signs nothing more and is published until its tokens expire\n"
    )
    record = json.loads((keys_env / f"{old}.json").read_text())
    assert datetime.fromisoformat(record["retired_at"]) <= datetime.now(UTC)
    listing = statuses(capsys)
    assert listing[new] == "signing"
    assert listing[old].startswith("retired, published until ")
    # Retiring it again changes nothing.
    assert run(capsys, "retire", old)[0] == 0
    assert json.loads((keys_env / f"{old}.json").read_text()) == record


def test_retiring_the_only_live_key_is_refused(
    keys_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = generate(capsys).kid
    code, out, err = run(capsys, "retire", first)
    assert (code, out) == (1, "")
    assert err == "error: this is the only live key; generate a new one first\n"
    assert json.loads((keys_env / f"{first}.json").read_text())["retired_at"] is None
    # With a second key, the first may go; then the second is the only live one.
    second = generate(capsys).kid
    assert run(capsys, "retire", first)[0] == 0
    code, _out, err = run(capsys, "retire", second)
    assert code == 1 and "only live key" in err
    assert json.loads((keys_env / f"{second}.json").read_text())["retired_at"] is None


def test_retiring_an_unknown_kid_fails(keys_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "retire", "no-such-kid")  # no directory at all
    assert (code, out) == (1, "")
    assert err == "error: no key no-such-kid in .usergraph-keys\n"
    generate(capsys)
    generate(capsys)
    code, out, err = run(capsys, "retire", "no-such-kid")
    assert (code, out) == (1, "") and "no key no-such-kid" in err
    assert all(key.retired_at is None for key in KeyDirectory(keys_env).load())


def test_kids_are_64_hex_characters_and_retire_as_listed(
    keys_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In base64url, 1 kid in 64 started with "-", and `usergraph keys retire <kid>` as `keys
    # list` printed it failed in argparse. In hex, no kid starts with "-", of many keys.
    maker = KeyDirectory(tmp_path / "scratch")
    kids = [maker.generate(alg).kid for alg in ("ES256", "EdDSA") for _ in range(300)]
    for kid in kids:
        assert re.fullmatch(KID, kid), kid
    assert len(set(kids)) == len(kids)
    assert sorted(file.stem for file in maker.path.glob("*.json")) == sorted(kids)

    for _ in range(4):
        generate(capsys)
    listing = listed(capsys)
    assert len(listing) == 4
    # Each kid as listed, pasted as it is (the first three; the last would be the only live
    # key), and once more after "--".
    for row in listing[:3]:
        kid = row[0]
        assert re.fullmatch(KID, kid), row
        code, out, err = run(capsys, "retire", kid)
        assert (code, err) == (0, ""), err
        assert out.startswith(f"retired {kid}: ")
    assert run(capsys, "retire", "--", listing[0][0])[0] == 0
    retired = {row[0] for row in listing[:3]}
    for key in KeyDirectory(keys_env).load():
        assert (key.retired_at is not None) == (key.kid in retired), key


def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    monkeypatch.setenv("USERGRAPH_MAILER", "log")


def test_generate_makes_the_first_key_of_a_production_deployment(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    production(monkeypatch)
    served: list[Settings] = []
    monkeypatch.setattr(cli, "_serve", lambda _args, settings: served.append(settings) or 0)
    # With no key, the settings load (so `keys` runs), but serving and the app refuse.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    problem = settings.missing_signing_key()
    assert problem is not None and "with ES256 needs a signing key" in problem
    assert "usergraph keys generate" in problem
    assert cli.main(["serve"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {problem}\n")
    assert served == []
    with pytest.raises(RuntimeError) as refused:
        create_app(settings)
    assert str(refused.value) == problem
    assert listed(capsys) == []

    # `usergraph keys generate` makes the first key, which signs at once...
    alg, kid, signs_from = generate(capsys)
    assert (alg, signs_from) == ("ES256", None)
    assert [file.stem for file in keys_env.glob("*.json")] == [kid]
    assert statuses(capsys) == {kid: "signing"}
    # ...and the server would start with it.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.missing_signing_key() is None
    app = create_app(settings)
    assert app is not None
    assert cli.main(["serve"]) == 0
    assert capsys.readouterr() == ("", "")
    [used] = served
    assert used.is_production and used.missing_signing_key() is None


def test_production_lists_and_rotates_once_it_has_a_key(
    keys_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = KeyDirectory(keys_env).generate("ES256")
    production(monkeypatch)
    _alg, second, signs_from = generate(capsys)
    assert signs_from is not None
    assert statuses(capsys) == {
        first.kid: "signing",
        second: f"{PENDING}{signs_from.isoformat()}",
    }
    assert run(capsys, "retire", first.kid)[0] == 0
    listing = statuses(capsys)
    assert listing.keys() == {first.kid, second}
    assert listing[second] == "signing"
    assert listing[first.kid].startswith("retired, published until ")


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


async def test_an_app_signs_with_the_keys_the_cli_manages(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI and the app share the key directory (the app's tmp_path/keys).
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.delenv("USERGRAPH_SIGNING_KEY", raising=False)
    monkeypatch.setenv("USERGRAPH_JWT_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert cli.main(["keys", "generate", "--algorithm", "EdDSA"]) == 0
    [first] = KeyDirectory(tmp_path / "keys").load()
    async with serving(database_url, tmp_path, signing_key=None, jwt_algorithm="ES256") as gql:
        # A live key exists: the app makes none of its own, and signs with the CLI's.
        account = await gql.register(f"cli{first.kid[:8]}")
        assert kid_of(account.access_token) == first.kid

        # A second key is published as soon as the ring looks at the directory...
        assert cli.main(["keys", "generate"]) == 0
        ring = gql.app.state.runtime.policy.tokens.ring
        ring.reload()  # what the ring does by itself within RELOAD_SECONDS
        [second] = [key for key in ring.current.keys if key.kid != first.kid]
        assert second.alg == "ES256" and second.created_at is not None
        assert second.signs_from == second.created_at + timedelta(seconds=CACHE_SECONDS)
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [second.kid, first.kid]
        discovery = (await gql.client.get(DISCOVERY_PATH)).json()
        assert discovery["access_token_signing_alg_values_supported"] == ["ES256", "EdDSA"]
        # ...but the first one keeps signing until verifiers' cached JWKS have the second...
        waiting = await gql.login(account.username)
        assert kid_of(waiting["accessToken"]) == first.kid
        # ...and once the cache time is over, the second one signs.
        with monkeypatch.context() as later:
            later.setattr(keys_module, "datetime", Later)
            signed = await gql.login(account.username)
        assert kid_of(signed["accessToken"]) == second.kid

        assert cli.main(["keys", "retire", first.kid]) == 0
        ring.reload()
        [live] = [key for key in ring.current.keys if key.retired_at is None]
        assert live.kid == second.kid
        again = await gql.login(account.username)
        assert kid_of(again["accessToken"]) == second.kid
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [second.kid, first.kid]
        for token in (account.access_token, waiting["accessToken"], signed["accessToken"]):
            me = await gql.ok("{ me { username } }", token=token)
            assert me["me"]["username"] == account.username
