"""Keyed pseudonyms of personal data (``lib/pseudonyms.py``) and the contracts that mark it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib import contracts
from mlops_assets.lib.pseudonyms import (
    KEY_VARIABLE,
    PSEUDONYM_LENGTH,
    Pseudonymizer,
    PseudonymKeyError,
    is_pseudonym,
    load_key,
    service_pseudonymizer,
)

KEY = "a-test-key-that-is-long-enough-0123456789"


def test_pseudonyms_are_keyed_deterministic_prefixed_and_of_fixed_length():
    one, other = Pseudonymizer(KEY), Pseudonymizer(KEY[::-1])
    assert one.pseudonym("N14228") == Pseudonymizer(KEY).pseudonym("N14228")
    assert one.pseudonym("N14228") != other.pseudonym("N14228")
    assert one.pseudonym("N14228") != one.pseudonym("N14229")
    values = ["N1", "N14228", "x" * 300, "jo@example.com"]
    assert all(is_pseudonym(p) and len(p) == PSEUDONYM_LENGTH for p in map(one.pseudonym, values))
    # Never a valid tail number: a pseudonym fed back in would break the contract.
    assert not re.match(contracts.TAILNUM_PATTERN, one.pseudonym("N14228"))
    assert KEY not in repr(one) and "hidden" in repr(one)


def test_a_frame_keeps_its_joins_and_its_missing_values():
    hide = Pseudonymizer(KEY)
    flights = pd.DataFrame({"tailnum": ["N1", None, "N2", "N1"], "flight": [1, 2, 3, 4]})
    planes = pd.DataFrame({"tailnum": ["N2", "N1"], "seats": [100, 200]})
    hidden_flights = hide.frame(flights, ["tailnum", "not_here"])
    joined = hidden_flights.merge(hide.frame(planes, ["tailnum"]), on="tailnum", how="left")
    assert joined["seats"].tolist()[0] == 200 and joined["seats"].tolist()[2] == 100
    assert hidden_flights["tailnum"].isna().tolist() == [False, True, False, False]
    assert flights["tailnum"].tolist()[0] == "N1"  # the input is left as it was
    assert hidden_flights["flight"].tolist() == [1, 2, 3, 4]
    [request] = hide.records([{"tailnum": "N1", "carrier": "UA"}], ["tailnum"])
    assert request == {"tailnum": hidden_flights["tailnum"][0], "carrier": "UA"}
    assert hide.records([{"tailnum": None}], ["tailnum"]) == [{"tailnum": None}]


def test_the_local_key_is_made_once_private_and_reused(tmp_path: Path):
    key_file = tmp_path / "state" / "pseudonym.key"
    first = load_key({}, key_file, production=False, create=True)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == ["pseudonym.key"]  # no temporary left
    again = load_key({}, key_file, production=False, create=True)
    assert first.pseudonym("N1") == again.pseudonym("N1")
    # The variable wins over the file.
    given = load_key({KEY_VARIABLE: KEY}, key_file, production=False, create=True)
    assert given.pseudonym("N1") == Pseudonymizer(KEY).pseudonym("N1")


def test_the_service_finds_the_pipeline_key_and_never_makes_one(tmp_path: Path):
    env = {settings.STATE_DIR_VAR: str(tmp_path)}
    with pytest.raises(PseudonymKeyError, match=f"set {KEY_VARIABLE} or let the pipeline"):
        service_pseudonymizer(env)
    assert list(tmp_path.iterdir()) == []
    pipeline = load_key({}, settings.locations(env).pseudonym_key, production=False, create=True)
    assert service_pseudonymizer(env).pseudonym("N1") == pipeline.pseudonym("N1")


def test_production_without_the_variable_refuses_naming_it(tmp_path: Path):
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY)  # a local file is no production key
    env = {settings.ENV_VAR: "production", settings.STATE_DIR_VAR: str(tmp_path)}
    with pytest.raises(PseudonymKeyError, match=f"MLOPS_ENV=production needs {KEY_VARIABLE}"):
        service_pseudonymizer(env)
    with pytest.raises(PseudonymKeyError, match=f"needs {KEY_VARIABLE}"):
        load_key({}, key_file, production=True, create=True)
    assert service_pseudonymizer({**env, KEY_VARIABLE: KEY}).pseudonym("N1").startswith("ps_")


def test_a_short_key_is_refused_without_quoting_it():
    with pytest.raises(PseudonymKeyError) as info:
        Pseudonymizer("short-secret")
    assert KEY_VARIABLE in str(info.value) and "short-secret" not in str(info.value)


def test_the_contracts_mark_the_tail_number_and_the_booking_contact():
    flights = contracts.flights_schema(["UA"], ["IAH"])
    assert contracts.sensitive_columns(flights) == {"tailnum": "quasi", "contact_email": "direct"}
    assert contracts.sensitive_columns(contracts.planes_schema()) == {"tailnum": "quasi"}
    assert contracts.sensitive_columns(contracts.weather_schema()) == {}
    with pytest.raises(ValueError, match="'direct' or 'quasi'"):
        contracts.sensitive("secret")


def test_a_broken_sensitive_value_fails_its_contract_without_being_shown(
    tables: dict[str, pd.DataFrame],
):
    planes = tables["planes"].head(30).copy()
    planes.loc[3, "tailnum"] = "n-bad7q"  # wrong format
    planes.loc[7, "tailnum"] = planes.loc[5, "tailnum"]  # a duplicate
    duplicate = planes.loc[5, "tailnum"]
    with pytest.raises(contracts.ContractViolation) as info:
        contracts.validate(planes, contracts.planes_schema(), source="planes.csv")
    violation = info.value
    assert "tailnum: str_matches('^[A-Z0-9]{2,7}$')" in violation.rules
    assert "tailnum: field_uniqueness" in violation.rules
    assert 4 in violation.rows and 8 in violation.rows
    shown = " ".join([violation.message, violation.summary, violation.markdown(), str(violation)])
    for value in ("n-bad7q", "N-BAD7Q", duplicate):
        assert value not in shown and value not in str(violation.failure_cases)
    assert contracts.MASKED in violation.markdown()


def test_a_booking_contact_is_checked_and_masked(tables: dict[str, pd.DataFrame]):
    from mlops_assets_tests.conftest import day_slice

    day = pd.Timestamp("2013-01-02").date()
    flights = day_slice(tables["flights"], day).head(20).copy()
    schema = contracts.flights_schema(tables["airlines"]["carrier"], tables["airports"]["faa"], day)
    flights["contact_email"] = [f"traveller{i}@example.com" for i in range(20)]
    assert len(contracts.validate(flights, schema, source="f")) == 20
    flights.loc[2, "contact_email"] = "not-an-address"
    with pytest.raises(contracts.ContractViolation) as info:
        contracts.validate(flights, schema, source="f")
    assert info.value.rows == [3]
    assert "not-an-address" not in info.value.markdown() + info.value.summary


def test_the_example_sources_booking_contact_is_pseudonymized_like_the_tail_number(
    tmp_path: Path,
):
    from mlops_assets.lib.landing import landing_path, read_csv
    from mlops_assets.lib.replay import replay
    from mlops_assets_tests.unit.test_source import load_example

    example = load_example()
    replay(tmp_path, example.FIRST_DAY, 1, source=example)
    raw = read_csv(landing_path(tmp_path, "flights", example.FIRST_DAY))
    airlines = read_csv(landing_path(tmp_path, "airlines"))["carrier"]
    airports = read_csv(landing_path(tmp_path, "airports"))["faa"]
    schema = contracts.flights_schema(airlines, airports, example.FIRST_DAY)
    stored = Pseudonymizer(KEY).frame(
        contracts.validate(raw, schema, source="f"), contracts.sensitive_columns(schema)
    )
    assert raw["contact_email"].str.contains("@").all()
    assert stored["contact_email"].map(is_pseudonym).all()
    assert stored["tailnum"].map(is_pseudonym).all()
    assert not set(raw["contact_email"]) & set(stored.astype(str).to_numpy().ravel())
