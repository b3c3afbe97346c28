"""schema.graphql is the printed schema, and it keeps every promise of the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import DangerousChangeType, find_breaking_changes, find_dangerous_changes
from graphql import build_schema as parse_sdl

from usergraph import cli
from usergraph.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "schema.graphql"
CONTRACT = ROOT.parent / "shared" / "design" / "contract.graphql"
V2_HEADING = "# Contract v2"


def test_snapshot_is_up_to_date() -> None:
    assert SNAPSHOT.read_text() == cli.printed_schema(), (
        "schema.graphql is stale: run `make schema`"
    )


def test_no_breaking_changes_against_the_snapshot() -> None:
    old = parse_sdl(SNAPSHOT.read_text())
    assert find_breaking_changes(old, build_schema()._schema) == []


def contract_sdl(*, through_v2: bool) -> str:
    """The contract's SDL: everything, or only what comes before its "Contract v2" section."""
    text = CONTRACT.read_text()
    if through_v2:
        return text
    return text[: text.rindex("# ====", 0, text.index(V2_HEADING))]


needs_contract = pytest.mark.skipif(
    not CONTRACT.exists(), reason=f"{CONTRACT} is not checked out beside the repo"
)


@needs_contract
def test_schema_contains_the_contract() -> None:
    contract = parse_sdl(contract_sdl(through_v2=False))
    ours = build_schema()._schema
    assert find_breaking_changes(contract, ours) == []
    # Enum values v2 adds are fine ("Adding ... enum values ... is fine"); nothing else.
    v2_codes = set(parse_sdl(contract_sdl(through_v2=True)).type_map["UserErrorCode"].values)  # type: ignore[attr-defined]
    for change in find_dangerous_changes(contract, ours):
        assert change.type is DangerousChangeType.VALUE_ADDED_TO_ENUM, change
        assert change.description.split("UserErrorCode.")[1].split()[0] in v2_codes, change


@needs_contract
def test_schema_contains_contract_v2() -> None:
    contract = parse_sdl(contract_sdl(through_v2=True))
    ours = build_schema()._schema
    assert find_breaking_changes(contract, ours) == []
    assert find_dangerous_changes(contract, ours) == []


def test_check_schema_fails_on_a_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A snapshot with a field the code does not have: removing it would break clients.
    old = SNAPSHOT.read_text().replace("type Role {", "type Role {\n  color: String", 1)
    path = tmp_path / "schema.graphql"
    path.write_text(old)
    assert cli.main(["check-schema", str(path)]) == 1
    assert "BREAKING FIELD_REMOVED: Field Role.color was removed." in capsys.readouterr().out


def test_check_schema_passes_on_the_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-schema", str(SNAPSHOT)]) == 0
    assert "no breaking or dangerous changes" in capsys.readouterr().out
