"""The README's curl walk-through, run as written against a real server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.processes import CLI, serve

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def curl_walkthrough() -> str:
    """The shell blocks of "With curl", minus the interactive create-user (it prompts)."""
    text = README.read_text()
    section = text[text.index("### With curl") : text.index("### With GraphiQL")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return "\n".join(
        block
        for block in blocks
        if not ("create-user" in block and "--password-stdin" not in block)
    )


def test_walkthrough_has_every_step() -> None:
    script = curl_walkthrough()
    for step in ("register(", "login(", "me {", "refresh(", "sleep 11", "users(", "logout"):
        assert step in script


def run_as_written(script: str, tmp_path: Path) -> str:
    """Run script against a fresh server with bash (-euo pipefail); its output."""
    with serve(tmp_path) as (base_url, env):
        result = subprocess.run(
            [
                "bash",
                "-c",
                "set -euo pipefail\n" + script.replace("http://127.0.0.1:8000", base_url),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_walkthrough_works_as_written(tmp_path: Path) -> None:
    out = run_as_written(curl_walkthrough().replace(".venv/bin/usergraph", " ".join(CLI)), tmp_path)
    assert '"username": "ada"' in out
    # The first refresh token: refused within the grace window, then reuse ends the session.
    assert out.index("This refresh token was already used.") < out.index("REFRESH_TOKEN_REUSED")
    assert '"me": null' in out
    assert "created user admin" in out
    assert '"totalCount": 2' in out
    assert '"revokedSessions": 1' in out


def second_factor_walkthrough() -> str:
    """The shell blocks of "Enrolling with an authenticator app", after the curl section's
    first block (API and jget)."""
    text = README.read_text()
    curl = text[text.index("### With curl") : text.index("### With GraphiQL")]
    section = text[
        text.index("### Enrolling with an authenticator app") : text.index(
            "### The same in GraphiQL"
        )
    ]
    setup = re.findall(r"```sh\n(.*?)```", curl, flags=re.DOTALL)[0]
    return setup + "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL))


def test_second_factor_walkthrough_has_every_step() -> None:
    script = second_factor_walkthrough()
    for step in (
        "startTotpEnrollment(",
        "confirmTotpEnrollment(",
        "secondFactorChallenge",
        "verifySecondFactor(",
        "regenerateRecoveryCodes(",
    ):
        assert step in script


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_second_factor_walkthrough_works_as_written(tmp_path: Path) -> None:
    """Enroll, sign in with both steps, recover with a recovery code: as a README reader would
    (it waits for the next 30-second step once, as the README says)."""
    out = run_as_written(second_factor_walkthrough(), tmp_path)
    assert re.search(
        r"^otpauth://totp/usergraph:grace\?secret=[A-Z2-7]{32}&issuer=usergraph$", out, re.M
    )
    assert (tmp_path / "totp-qr.svg").read_text().startswith("<svg")
    assert '"totpEnabled": true' in out and '"recoveryCodesRemaining": 10' in out
    assert '"username": "grace"' in out  # both steps signed in
    assert '"recoveryCodesRemaining": 9' in out  # the recovery code worked, once
    assert '"code": "INVALID_CODE"' in out  # and not a second time
