"""``mlops-assets audit``: the trail as a table or JSON lines, and ``--verify``'s verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upath import UPath

from mlops_assets.cli import main
from mlops_assets.lib import audit


@pytest.fixture
def trail(state_dir: Path) -> Path:
    root = state_dir / "audit"
    for version in (1, 2, 3):
        audit.append(
            UPath(root),
            "rollback",
            "alice",
            f"flight_delay champion v{version + 1} -> v{version}",
            "bad answers",
            {"to_version": version},
        )
    return root


def test_the_trail_prints_as_a_table_and_as_json_lines(trail: Path, capsys) -> None:
    assert main(["audit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == list(audit.COLUMNS)
    assert len(lines) == 4 and lines[3].split()[:4][2:] == ["rollback", "alice"]
    assert lines[3].endswith("bad answers  to_version=3")
    assert main(["audit", "--json", "--last", "2"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in printed] == [2, 3]
    assert printed[1]["evidence"] == {"to_version": "3"} and len(printed[1]["hash"]) == 64


def test_verify_says_intact(trail: Path, capsys) -> None:
    head = audit.read(UPath(trail))[-1].hash
    assert main(["audit", "--verify"]) == 0
    assert capsys.readouterr().out == f"intact: 3 record(s), head {head}\n"


def test_a_tampered_record_fails_verify_naming_it(trail: Path, capsys) -> None:
    path = trail / "00000002.json"
    fields = json.loads(path.read_text())
    path.write_text(json.dumps({**fields, "actor": "mallory"}))
    assert main(["audit", "--verify"]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"error: the audit trail at {trail} is broken at 00000002.json: its content does not "
        "match its hash (edited) (1 record(s) before it check out)\n"
    )
    assert json.loads(path.read_text())["actor"] == "mallory"  # verify changes nothing


def test_a_removed_record_fails_verify_naming_it(trail: Path, capsys) -> None:
    (trail / "00000002.json").unlink()
    assert main(["audit", "--verify"]) == 1
    assert "broken at 00000002.json: missing: the numbers skip it" in capsys.readouterr().err


def test_an_unreadable_record_fails_printing_and_verify(trail: Path, capsys) -> None:
    (trail / "00000003.json").write_text("{torn")
    assert main(["audit"]) == 1
    assert "00000003.json: not a record" in capsys.readouterr().err
    assert main(["audit", "--verify"]) == 1
    assert "broken at 00000003.json: not a record" in capsys.readouterr().err


def test_an_empty_trail_prints_the_header_and_verifies(state_dir: Path, capsys) -> None:
    assert main(["audit"]) == 0
    assert capsys.readouterr().out.split() == list(audit.COLUMNS)
    assert main(["audit", "--verify"]) == 0
    assert capsys.readouterr().out.startswith("intact: 0 record(s)")
