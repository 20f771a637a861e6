"""``mlops-assets stream-score``: what it refuses before it waits for anything."""

from __future__ import annotations

import pytest

from mlops_assets import cli
from mlops_assets.lib.pseudonyms import KEY_VARIABLE


def test_a_url_of_no_known_broker_is_refused(state_dir, capsys):
    assert cli.main(["stream-score", "--url", "http://127.0.0.1:4222"]) != 0
    assert "MLOPS_STREAM_URL must start with one of nats://, kafka://" in capsys.readouterr().err


def test_without_a_pseudonym_key_the_scorer_does_not_start(state_dir, capsys, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    assert cli.main(["stream-score", "--url", "nats://127.0.0.1:4222"]) != 0
    err = capsys.readouterr().err
    assert f"no pseudonym key: set {KEY_VARIABLE}" in err
    assert not (state_dir / "lake").exists()  # nothing written


@pytest.mark.parametrize("option", ["--max-events", "--max-wait-ms", "--ack-wait", "--poll"])
def test_the_batching_options_are_there(option, capsys):
    with pytest.raises(SystemExit):
        cli.main(["stream-score", "--help"])
    assert option in capsys.readouterr().out
