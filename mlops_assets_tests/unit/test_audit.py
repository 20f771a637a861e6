"""The hash-chained audit trail (``lib/audit.py``): appends, races, and every kind of tamper."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from upath import UPath

from mlops_assets.lib import audit


def _trail(root: Path, count: int = 3) -> list[audit.Record]:
    return [
        audit.append(
            UPath(root),
            "promotion",
            "alice",
            f"flight_delay v{seq}",
            "beats the champion",
            {"mlflow_run": f"run{seq}", "dagster_run": None},
            now=datetime(2026, 12, 1, 9, seq, tzinfo=UTC),
        )
        for seq in range(1, count + 1)
    ]


def test_records_chain_each_to_the_one_before(tmp_path: Path) -> None:
    first, second, third = _trail(tmp_path)
    assert (first.seq, first.prev) == (1, audit.GENESIS)
    assert second.prev == first.hash and third.prev == second.hash
    assert first.at == "2026-12-01T09:01:00+00:00"
    assert first.evidence == {"mlflow_run": "run1"}  # empty links are left out
    assert audit.read(UPath(tmp_path)) == [first, second, third]
    assert audit.verify(UPath(tmp_path)) == audit.Verification(3, third.hash)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000001.json",
        "00000002.json",
        "00000003.json",
    ]


def test_an_empty_trail_verifies(tmp_path: Path) -> None:
    assert audit.verify(UPath(tmp_path / "none")).ok
    assert audit.read(UPath(tmp_path / "none")) == []


def _edit(path: Path, **changes: object) -> None:
    fields = json.loads(path.read_text())
    path.write_text(json.dumps({**fields, **changes}))


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    _trail(tmp_path)
    _edit(tmp_path / "00000002.json", actor="mallory")
    result = audit.verify(UPath(tmp_path))
    assert (result.ok, result.records, result.first_bad) == (False, 1, "00000002.json")
    assert "edited" in result.problem


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(tmp_path: Path) -> None:
    _trail(tmp_path)
    path = tmp_path / "00000002.json"
    record = audit.Record(**json.loads(path.read_text()))
    forged = audit.Record(**{**record.body(), "reason": "no reason"})
    _edit(path, reason="no reason", hash=audit.record_hash(forged.body()))
    result = audit.verify(UPath(tmp_path))
    assert result.first_bad == "00000003.json"
    assert "does not point at the record before" in result.problem


def test_a_removed_record_is_named(tmp_path: Path) -> None:
    _trail(tmp_path)
    (tmp_path / "00000002.json").unlink()
    result = audit.verify(UPath(tmp_path))
    assert (result.first_bad, result.problem) == ("00000002.json", "missing: the numbers skip it")


def test_an_unreadable_record_is_named_and_the_trail_stops_growing(tmp_path: Path) -> None:
    _trail(tmp_path)
    (tmp_path / "00000003.json").write_text("{not json")
    result = audit.verify(UPath(tmp_path))
    assert result.first_bad == "00000003.json" and "not a record" in result.problem
    with pytest.raises(audit.AuditError, match=r"00000003.json .* is unreadable"):
        audit.append(UPath(tmp_path), "rollback", "bob", "v1", "why")
    assert len(list(tmp_path.iterdir())) == 3


def test_unknown_acts_and_empty_actors_are_refused(tmp_path: Path) -> None:
    with pytest.raises(audit.AuditError, match="unknown act 'deploy'"):
        audit.append(UPath(tmp_path), "deploy", "bob", "v1", "why")
    with pytest.raises(audit.AuditError, match="needs an actor"):
        audit.append(UPath(tmp_path), "rollback", " ", "v1", "why")
    assert not tmp_path.joinpath("00000001.json").exists()


def test_concurrent_writers_never_share_a_number(tmp_path: Path) -> None:
    def write(who: str) -> None:
        for _ in range(10):
            audit.append(UPath(tmp_path), "policy_change", who, "trial policy", "test")

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = audit.verify(UPath(tmp_path))
    assert (result.ok, result.records) == (True, 40)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged leftovers


def test_verify_since_reads_only_what_chains_onto_the_anchor(tmp_path: Path) -> None:
    _, second, third = _trail(tmp_path)
    (tmp_path / "00000001.json").write_text("{not json")  # before the anchor: not read
    found = audit.verify_since(UPath(tmp_path), 2, second.hash)
    assert found == audit.Continuation((third,), audit.Verification(3, third.hash))
    assert audit.verify_since(UPath(tmp_path), 3, third.hash).records == ()


def test_verify_since_from_nothing_checks_the_whole_trail(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    found = audit.verify_since(UPath(tmp_path), 0, audit.GENESIS)
    assert found.records == tuple(records) and found.verification.ok


def test_the_newest_records_deleted_lose_the_anchor(tmp_path: Path) -> None:
    *_, third = _trail(tmp_path)
    (tmp_path / "00000003.json").unlink()  # the chain alone still checks out
    assert audit.verify(UPath(tmp_path)).ok
    found = audit.verify_since(UPath(tmp_path), 3, third.hash)
    assert found.anchor_lost and found.verification.first_bad == "00000003.json"
    assert "ends at record 2" in found.verification.problem
    assert "truncated" in found.verification.problem


def test_a_rewritten_chain_loses_the_anchor(tmp_path: Path) -> None:
    _, second, _ = _trail(tmp_path)
    for path in sorted(tmp_path.iterdir())[1:]:
        path.unlink()
    # Rewritten with a valid chain: only the anchor kept outside the trail notices.
    forged = audit.append(UPath(tmp_path), "rollback", "mallory", "v1", "cover up")
    assert audit.verify(UPath(tmp_path)).ok
    found = audit.verify_since(UPath(tmp_path), 2, second.hash)
    assert found.anchor_lost and found.verification.first_bad == "00000002.json"
    assert found.verification.problem.startswith("rewritten: it hashed")
    assert forged.hash[:12] in found.verification.problem


def test_a_bad_record_after_the_anchor_is_named(tmp_path: Path) -> None:
    first, _, _ = _trail(tmp_path)
    _edit(tmp_path / "00000003.json", reason="changed")
    found = audit.verify_since(UPath(tmp_path), 1, first.hash)
    assert [r.seq for r in found.records] == [2] and not found.anchor_lost
    assert (found.verification.first_bad, found.verification.records) == ("00000003.json", 2)
    assert "edited" in found.verification.problem


def test_tables_show_every_column(tmp_path: Path) -> None:
    records = _trail(tmp_path, 2)
    text = audit.text_table(records).splitlines()
    assert text[0].split() == list(audit.COLUMNS)
    assert text[1].split()[:4] == ["1", "2026-12-01T09:01:00+00:00", "promotion", "alice"]
    assert text[2].endswith("mlflow_run=run2")
    markdown = audit.markdown_table(records).splitlines()
    assert markdown[0] == "| seq | when | act | actor | subject | reason | evidence |"
    assert markdown[2].startswith("| 1 | 2026-12-01T09:01:00+00:00 | promotion | alice |")
