"""Tokens, scopes, key rotation and the rate limit, through the real guard on a plain ASGI app.

Keys and tokens come from the local issuer (``serving.tokens``), the one the docs show.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

with warnings.catch_warnings():  # starlette's notice about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlops_assets import cli
from mlops_assets.serving import tokens
from mlops_assets.serving.auth import (
    ADMIN,
    LEEWAY_S,
    PREDICT,
    KeySet,
    RateLimiter,
    access_from_environment,
    rate_limit_from_environment,
)
from mlops_assets.serving.guard import ApiGuard

AUDIENCE = "flight-delay-test"
API_KEY = "k3y-for-the-simple-option"
INVALID = 'Bearer error="invalid_token"'
SUBJECT = "subject-7f3a9c"  # a claim value that must never be repeated


class Recorder:
    """The app behind the guard: answers 200 and records every request it was given."""

    def __init__(self) -> None:
        self.served: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body", False):
            pass
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A key set of one ES256 key, made by the local issuer."""
    folder = tmp_path / "api_auth"
    tokens.add_key(folder)
    return folder


def environment(keys: Path, **extra: str) -> dict[str, str]:
    return {
        "MLOPS_JWT_KEYS": str(keys / tokens.PUBLIC_FILE),
        "MLOPS_JWT_AUDIENCE": AUDIENCE,
        **extra,
    }


def guarded(env: dict[str, str], limiter: RateLimiter | None = None) -> tuple[TestClient, Recorder]:
    app = Recorder()
    guard = ApiGuard(app, access=access_from_environment(env), limiter=limiter)
    return TestClient(guard), app


def token(keys: Path, scopes: tuple[str, ...] = (PREDICT,), **changes: Any) -> str:
    return tokens.mint(
        keys,
        changes.pop("subject", SUBJECT),
        list(scopes),
        changes.pop("audience", AUDIENCE),
        **changes,
    )


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def assert_refused(
    response: Any, app: Recorder, status: int, error: str, challenge: str, secret: str = ""
) -> None:
    """The refusal's status, error and challenge; nothing served; no submitted value sent back."""
    assert response.status_code == status, response.text
    assert response.json() == {"error": error}
    assert response.headers["www-authenticate"] == challenge
    assert app.served == []
    assert SUBJECT not in response.text
    if secret:
        assert secret not in response.text


# -- tokens -----------------------------------------------------------------------------------


def test_a_valid_token_with_the_scope_is_served(keys: Path):
    client, app = guarded(environment(keys))
    assert client.post("/predict", json={}, headers=bearer(token(keys))).status_code == 200
    admin = token(keys, (PREDICT, ADMIN))
    assert client.post("/model", headers=bearer(admin)).status_code == 200
    assert client.post("/predict_batch", json={}, headers=bearer(admin)).status_code == 200
    assert app.served == ["/predict", "/model", "/predict_batch"]


def test_a_missing_token_is_a_401_asking_for_one(keys: Path):
    client, app = guarded(environment(keys))
    response = client.post("/predict", json={})
    assert_refused(
        response, app, 401, "missing credentials: send Authorization: Bearer <token>", "Bearer"
    )


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("Basic dXNlcjpwYXNz", "malformed Authorization header: send Bearer <token>"),
        ("Bearer", "malformed Authorization header: send Bearer <token>"),
        ("Bearer    ", "malformed Authorization header: send Bearer <token>"),
        ("Bearer not-a-token", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
    ],
)
def test_a_malformed_header_or_token_is_a_401(keys: Path, authorization: str, error: str):
    client, app = guarded(environment(keys))
    response = client.post("/predict", json={}, headers={"Authorization": authorization})
    assert_refused(response, app, 401, error, INVALID)


def test_an_expired_token_is_refused(keys: Path):
    client, app = guarded(environment(keys))
    expired = token(keys, expires_in=-(LEEWAY_S + 5))
    response = client.post("/predict", json={}, headers=bearer(expired))
    assert_refused(response, app, 401, "token expired", INVALID, expired)
    # Within the leeway, a token just past its expiry still passes (clock skew).
    skewed = token(keys, expires_in=-(LEEWAY_S // 2))
    assert client.post("/predict", json={}, headers=bearer(skewed)).status_code == 200


def test_a_token_for_another_audience_is_refused(keys: Path):
    client, app = guarded(environment(keys))
    other = token(keys, audience="another-service")
    response = client.post("/predict", json={}, headers=bearer(other))
    assert_refused(response, app, 401, "token issued for another audience", INVALID, other)
    assert "another-service" not in response.text


def test_a_token_from_another_issuer_is_refused_when_the_issuer_is_checked(keys: Path):
    client, app = guarded(environment(keys, MLOPS_JWT_ISSUER="https://idp.example"))
    wrong = token(keys, issuer="https://evil.example")
    response = client.post("/predict", json={}, headers=bearer(wrong))
    assert_refused(response, app, 401, "token issued by another issuer", INVALID, wrong)
    right = token(keys, issuer="https://idp.example")
    assert client.post("/predict", json={}, headers=bearer(right)).status_code == 200


def test_a_forged_token_is_refused(keys: Path, tmp_path: Path):
    client, app = guarded(environment(keys))
    elsewhere = tmp_path / "forger"
    foreign = token(elsewhere)  # a key of its own, not in the set
    response = client.post("/predict", json={}, headers=bearer(foreign))
    assert_refused(
        response, app, 401, "token signed by a key that is not in the key set", INVALID, foreign
    )
    # The same, claiming the kid of a key in the set: the signature gives it away.
    kid = tokens.ensure_keys(keys)
    shutil.copy(
        elsewhere / "private" / f"{tokens.ensure_keys(elsewhere)}.pem",
        elsewhere / "private" / f"{kid}.pem",
    )
    posing = token(elsewhere, kid=kid)
    response = client.post("/predict", json={}, headers=bearer(posing))
    assert_refused(response, app, 401, "token signature does not verify", INVALID, posing)


def _hand_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A token signed HS256 by hand (PyJWT refuses to sign with a public key as the secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_unsigned_and_symmetric_tokens_are_refused(keys: Path):
    client, app = guarded(environment(keys))
    kid = tokens.ensure_keys(keys)
    claims = {"sub": SUBJECT, "aud": AUDIENCE, "exp": int(time.time()) + 60, "scope": PREDICT}
    public = (keys / tokens.PUBLIC_FILE).read_bytes()  # "signed" with the public key
    for forged in (
        _hand_signed({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims, public),
        jwt.encode(claims, None, algorithm="none", headers={"kid": kid}),
    ):
        response = client.post("/predict", json={}, headers=bearer(forged))
        error = "token algorithm not accepted (accepted: RS256, ES256)"
        assert_refused(response, app, 401, error, INVALID, forged)


@pytest.mark.parametrize("claim", ["exp", "aud", "sub"])
def test_a_token_without_a_required_claim_is_refused(keys: Path, claim: str):
    client, app = guarded(environment(keys))
    kid = tokens.ensure_keys(keys)
    claims = {"sub": SUBJECT, "aud": AUDIENCE, "exp": int(time.time()) + 60, "scope": PREDICT}
    del claims[claim]
    pem = (keys / "private" / f"{kid}.pem").read_bytes()
    partial = jwt.encode(claims, pem, algorithm="ES256", headers={"kid": kid})
    response = client.post("/predict", json={}, headers=bearer(partial))
    assert_refused(response, app, 401, f"token without the required claim {claim}", INVALID)


@pytest.mark.parametrize(
    ("path", "scopes", "needed"),
    [
        ("/model", (PREDICT,), ADMIN),
        ("/predict", (ADMIN,), PREDICT),
        ("/predict_batch", (), PREDICT),
    ],
)
def test_a_token_without_the_scope_is_a_403_naming_it(
    keys: Path, path: str, scopes: tuple[str, ...], needed: str
):
    client, app = guarded(environment(keys))
    response = client.post(path, json={}, headers=bearer(token(keys, scopes)))
    challenge = f'Bearer error="insufficient_scope", scope="{needed}"'
    assert_refused(response, app, 403, f"this endpoint needs the scope {needed}", challenge)


def test_keys_rotate_without_a_restart(keys: Path):
    client, app = guarded(environment(keys))
    old = token(keys)
    tokens.add_key(keys)  # publish the new key, sign with it
    new = token(keys)
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    for value in (old, new):  # both published: both served (and remembered as verified)
        assert client.post("/predict", json={}, headers=bearer(value)).status_code == 200
    assert tokens.retire_old_keys(keys) == [jwt.get_unverified_header(old)["kid"]]
    app.served.clear()
    response = client.post("/predict", json={}, headers=bearer(old))
    error = "token signed by a key that is not in the key set"
    assert_refused(response, app, 401, error, INVALID, old)
    assert client.post("/predict", json={}, headers=bearer(new)).status_code == 200


def test_a_key_set_that_breaks_keeps_the_last_good_one(keys: Path):
    client, _ = guarded(environment(keys))
    valid = token(keys)
    (keys / tokens.PUBLIC_FILE).write_text('{"keys": [')  # a half-written file
    assert client.post("/predict", json={}, headers=bearer(valid)).status_code == 200


@pytest.fixture
def key_server(keys: Path) -> Iterator[str]:
    """The key set's folder served over HTTP on 127.0.0.1 (an identity provider's JWKS URL)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(keys), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{tokens.PUBLIC_FILE}"
    server.shutdown()
    thread.join(5)


def test_a_key_set_url_is_fetched_again_after_its_ttl(keys: Path, key_server: str):
    now = [0.0]
    key_set = KeySet(key_server, ttl=60.0, clock=lambda: now[0])
    old = tokens.ensure_keys(keys)
    new = tokens.add_key(keys)
    tokens.retire_old_keys(keys)
    assert key_set.key(old) is not None  # fresh: no fetch yet
    now[0] = 61.0
    key_set.key(old)  # due: fetched in the background
    deadline = time.monotonic() + 5.0
    while key_set.key(new) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert key_set.key(new) is not None
    assert key_set.key(old) is None


# -- the API key beside tokens ------------------------------------------------------------------


def test_the_api_key_still_works_beside_tokens_and_grants_every_scope(keys: Path):
    client, app = guarded(environment(keys, MLOPS_API_KEY=API_KEY))
    for headers in (bearer(API_KEY), {"X-API-Key": API_KEY}):
        assert client.post("/predict", json={}, headers=headers).status_code == 200
        assert client.post("/model", headers=headers).status_code == 200
    assert client.post("/predict", json={}, headers=bearer(token(keys))).status_code == 200
    assert app.served == ["/predict", "/model"] * 2 + ["/predict"]
    app.served.clear()
    response = client.post("/predict", json={}, headers={"X-API-Key": API_KEY[:-1]})
    assert_refused(response, app, 401, "wrong API key", INVALID, API_KEY[:-1])
    response = client.post("/predict", json={}, headers=bearer(API_KEY + "x"))
    assert_refused(response, app, 401, "wrong API key", INVALID, API_KEY)
    response = client.post("/predict", json={})
    error = "missing credentials: send Authorization: Bearer <API key or token>"
    assert_refused(response, app, 401, error, "Bearer")


def test_without_an_api_key_configured_x_api_key_is_refused(keys: Path):
    client, app = guarded(environment(keys))
    response = client.post("/predict", json={}, headers={"X-API-Key": "anything"})
    error = "no API key is configured: send Authorization: Bearer <token>"
    assert_refused(response, app, 401, error, INVALID)


# -- settings -----------------------------------------------------------------------------------


def test_production_refuses_to_run_without_a_key_or_a_key_set(keys: Path):
    error = (
        "MLOPS_API_KEY or MLOPS_JWT_KEYS must be set when MLOPS_ENV=production: the prediction "
        "endpoints are not served without an API key or a token key set"
    )
    with pytest.raises(RuntimeError, match=error):
        access_from_environment({"MLOPS_ENV": "production"})
    assert access_from_environment({"MLOPS_ENV": "production", "MLOPS_API_KEY": "k"}).api_key
    assert access_from_environment(environment(keys, MLOPS_ENV="production")).tokens
    assert access_from_environment({}).open


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"MLOPS_JWT_AUDIENCE": ""}, "MLOPS_JWT_AUDIENCE must be set with MLOPS_JWT_KEYS"),
        ({"MLOPS_JWT_KEYS": "/nowhere/jwks.json"}, "MLOPS_JWT_KEYS: could not read the key set"),
        (
            {"MLOPS_JWT_KEYS": "http://keys.example/jwks.json"},
            "MLOPS_JWT_KEYS must be a file or an https URL",
        ),
    ],
)
def test_a_bad_key_set_setting_stops_the_start(keys: Path, changes: dict[str, str], error: str):
    with pytest.raises(RuntimeError, match=error):
        access_from_environment({**environment(keys), **changes})


def test_a_key_set_without_a_usable_public_key_stops_the_start(keys: Path):
    path = keys / tokens.PUBLIC_FILE
    public = json.loads(path.read_text())["keys"][0]
    private_pem = next((keys / "private").iterdir()).read_bytes()
    private = json.loads(
        jwt.algorithms.ECAlgorithm.to_jwk(
            jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).prepare_key(private_pem)
        )
    )
    for bad in (
        {"keys": [{**private, "kid": "k"}]},  # a private key is never used
        {"keys": [{k: v for k, v in public.items() if k != "kid"}]},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k", "alg": "HS256"}]},
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(RuntimeError, match="the key set holds no public RS256 or ES256 key"):
            access_from_environment(environment(keys))


# -- the rate limit -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_over_the_limit_is_a_429_then_served_after_the_window(keys: Path):
    clock = Clock()
    limiter = RateLimiter(3, 1.0, clock=clock)
    client, app = guarded(environment(keys), limiter)
    mine, other = bearer(token(keys)), bearer(token(keys, subject="another-client"))
    for _ in range(3):
        assert client.post("/predict", json={}, headers=mine).status_code == 200
    response = client.post("/predict", json={}, headers=mine)
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": "rate limit of 3 requests per 1 s exceeded: retry after 1 s"
    }
    assert SUBJECT not in response.text
    assert len(app.served) == 3  # the fourth never reached the app
    assert client.post("/predict", json={}, headers=other).status_code == 200  # its own bucket
    clock.now += 1.0  # the window has passed
    assert client.post("/predict", json={}, headers=mine).status_code == 200
    assert len(app.served) == 5


def test_a_refused_request_does_not_spend_the_budget():
    clock = Clock()
    limiter = RateLimiter(1, 60.0, clock=clock)
    assert limiter.take("a") == 0
    assert limiter.take("a") == 60
    clock.now += 30
    assert limiter.take("a") == 30  # half refilled: the refusals took nothing
    clock.now += 30
    assert limiter.take("a") == 0


def test_an_open_api_limits_each_address():
    clock = Clock()
    client, _ = guarded({}, RateLimiter(2, 1.0, clock=clock))
    statuses = [client.post("/predict", json={}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get("/metrics").status_code == 200  # probes and metrics are never limited


def test_the_limiter_forgets_idle_clients_and_stays_bounded():
    clock = Clock()
    limiter = RateLimiter(5, 1.0, max_clients=100, clock=clock)
    for i in range(1000):
        limiter.take(f"client-{i}")
    assert len(limiter.buckets) == 100
    clock.now += 1.0  # all idle: their buckets are full again
    limiter.take("late")
    assert list(limiter.buckets) == ["late"]


def test_the_rate_limit_setting():
    assert rate_limit_from_environment({}) is None
    assert rate_limit_from_environment({"MLOPS_RATE_LIMIT": "off"}) is None
    limiter = rate_limit_from_environment({"MLOPS_RATE_LIMIT": "100/s"})
    assert limiter is not None and (limiter.rate, limiter.period) == (100, 1.0)
    limiter = rate_limit_from_environment({"MLOPS_RATE_LIMIT": "600 / min"})
    assert limiter is not None and (limiter.rate, limiter.period) == (600, 60.0)
    for bad in ("100", "0/s", "fast", "10/day", "-1/s"):
        with pytest.raises(RuntimeError, match=r"MLOPS_RATE_LIMIT must be <count>/<s\|min\|h>"):
            rate_limit_from_environment({"MLOPS_RATE_LIMIT": bad})


# -- the local issuer -----------------------------------------------------------------------------


def test_the_cli_creates_a_private_key_set_and_mints_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    state = tmp_path / "state"
    assert cli.main(["api-token", "keys", "--state", str(state)]) == 0
    folder = state / tokens.KEYS_FOLDER
    [private] = list((folder / "private").iterdir())
    assert private.stat().st_mode & 0o777 == 0o600
    assert (folder / "private").stat().st_mode & 0o777 == 0o700
    assert "d" not in json.loads((folder / tokens.PUBLIC_FILE).read_text())["keys"][0]
    capsys.readouterr()
    argv = ["api-token", "mint", "--state", str(state), "--scope", "admin", "--audience", AUDIENCE]
    assert cli.main([*argv, "--subject", "ci", "--expires-in", "60"]) == 0
    minted = capsys.readouterr().out.strip()
    client, _ = guarded(environment(folder))
    assert client.post("/model", headers=bearer(minted)).status_code == 200
    assert client.post("/predict", json={}, headers=bearer(minted)).status_code == 403
