"""Who may call the prediction API, and how often (plain Python, no BentoML).

Bearer tokens (JWT) checked against a key set, the static API key, scopes per path, and a
rate limit per client.

A token is a JWT signed with RS256 or ES256 by a key of the key set ``MLOPS_JWT_KEYS`` (a JWKS
file or an https URL), which ``kid`` picks. The set is re-read when the file changes (or, for a
URL, every ``KEYSET_TTL_S``), so keys rotate without a restart: publish the new key, sign with
it, drop the old one; a token of a dropped key is refused from then on.

Every refusal names the rule it broke and never a submitted value (neither the token nor any
of its claims).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_KEY_VARIABLE = "MLOPS_API_KEY"
JWT_KEYS_VARIABLE = "MLOPS_JWT_KEYS"
JWT_AUDIENCE_VARIABLE = "MLOPS_JWT_AUDIENCE"
JWT_ISSUER_VARIABLE = "MLOPS_JWT_ISSUER"
RATE_LIMIT_VARIABLE = "MLOPS_RATE_LIMIT"
ENV_VARIABLE = "MLOPS_ENV"  # settings.ENV_VAR; the service imports as little as it can
# Every setting of who may call the service and how often.
ACCESS_VARIABLES = (
    API_KEY_VARIABLE,
    JWT_KEYS_VARIABLE,
    JWT_AUDIENCE_VARIABLE,
    JWT_ISSUER_VARIABLE,
    RATE_LIMIT_VARIABLE,
)

PREDICT = "predict"
ADMIN = "admin"
# The scope each protected path needs. The service has no rollout-control endpoint (its mode is
# read once at start), so ``admin`` covers the model's identity only.
SCOPES = {"/predict": PREDICT, "/predict_batch": PREDICT, "/model": ADMIN}
# Asymmetric only: the service holds public keys, never a secret that could sign.
ALGORITHMS = ("RS256", "ES256")
# Claims a token must carry (``sub`` names the client the rate limit counts).
REQUIRED_CLAIMS = ("exp", "aud", "sub")
LEEWAY_S = 30  # clock skew between the issuer and the service
KEYSET_TTL_S = 300.0  # a key set fetched from a URL is fetched again after this
KEYSET_REFETCH_S = 30.0  # an unknown kid fetches a URL's set again, at most this often
FETCH_TIMEOUT_S = 5.0
MAX_CLIENTS = 10_000  # rate-limit buckets kept; the least recently seen go first
# Tokens verified recently, skipping their signature check (a few hundred microseconds) until
# they expire or the key set changes.
VERIFIED_CACHE = 1024
_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)\s*")
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
_PERIODS |= {"h": 3600.0, "hour": 3600.0}
_LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")

logger = logging.getLogger(__name__)


class KeySetError(RuntimeError):
    """A key set that cannot be read or holds no usable key."""


def parse_key_set(text: str | bytes) -> dict[str, Any]:
    """The usable public keys of a JWKS document by ``kid`` (``jwt.PyJWK`` values).

    Keys without a ``kid``, of another algorithm than RS256/ES256, or carrying private
    parameters are left out; a set left empty is an error.
    """
    import jwt

    try:
        document = json.loads(text)
        keys = document["keys"] if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise KeySetError('a key set is a JSON object {"keys": [...]}')
    except ValueError as error:
        raise KeySetError(f"the key set is not JSON: {error}") from None
    usable: dict[str, Any] = {}
    for entry in keys:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if "d" in entry:  # a private key published by mistake: never use it
            logger.error("key %s of the key set is a private key: left out", entry["kid"])
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ALGORITHMS:
            usable[entry["kid"]] = key
    if not usable:
        raise KeySetError(f"the key set holds no public {' or '.join(ALGORITHMS)} key with a kid")
    return usable


class KeySet:
    """The public keys tokens are verified with, kept current with their source.

    ``source`` is a file (re-read when its modification time or size changes, checked on
    every lookup: a ``stat``) or an https URL (fetched again every ``ttl`` seconds, and when
    a token names an unknown kid, at most every ``KEYSET_REFETCH_S``). A source that cannot be
    read at start is an error; later, the last good set stays in use and the failure is logged.
    """

    def __init__(
        self,
        source: str,
        ttl: float = KEYSET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.is_url = source.startswith(("https://", "http://"))
        if source.startswith("http://") and not source.startswith(_LOOPBACK):
            raise KeySetError(
                f"{JWT_KEYS_VARIABLE} must be a file or an https URL: keys fetched in the clear "
                "could be replaced on the way"
            )
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: Any = None
        self._fetched = -math.inf
        self._fetching = False
        self.generation = (
            0  # counts the sets read: what was verified with an older one is not trusted
        )
        self.keys = self._read()

    def key(self, kid: str) -> Any | None:
        """The public key ``kid``, after refreshing the set if it changed; None if absent."""
        self.refresh(unknown=kid not in self.keys)
        return self.keys.get(kid)

    def refresh(self, unknown: bool = False) -> None:
        """Re-reads a changed file now; fetches a due URL in the background.

        The event loop never waits for the network: the last set answers meanwhile.
        """
        if not self.is_url:
            if self._file_stamp() != self._stamp:
                self._replace()
            return
        age = self.clock() - self._fetched
        if age < self.ttl and not (unknown and age >= KEYSET_REFETCH_S):
            return
        with self._lock:
            if self._fetching:
                return
            self._fetching = True
            self._fetched = self.clock()  # also on failure: the next try waits its turn
        threading.Thread(target=self._replace, name="jwks-fetch", daemon=True).start()

    def _replace(self) -> None:
        try:
            self.keys = self._read()
            self.generation += 1
        except KeySetError as error:
            logger.error("kept the last key set: %s", error)
        finally:
            self._fetching = False

    def _file_stamp(self) -> Any:
        try:
            stat = os.stat(self.source)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _read(self) -> dict[str, Any]:
        if self.is_url:
            self._fetched = self.clock()
            try:
                with urllib.request.urlopen(self.source, timeout=FETCH_TIMEOUT_S) as answer:
                    return parse_key_set(answer.read())
            except OSError as error:
                raise KeySetError(f"could not fetch the key set {self.source}: {error}") from None
        self._stamp = self._file_stamp()
        try:
            text = Path(self.source).read_bytes()
        except OSError as error:
            raise KeySetError(f"could not read the key set {self.source}: {error}") from None
        return parse_key_set(text)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the rate limit's client and the scopes it holds."""

    client: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: its status, the error and the ``WWW-Authenticate`` value."""

    status: int
    error: str
    challenge: str


class TokenVerifier:
    """Verifies bearer tokens: signature by a key of the set, ``exp``, ``aud`` (and ``iss``)."""

    def __init__(self, keys: KeySet, audience: str, issuer: str = "") -> None:
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        # token -> (principal, expiry with the leeway, key set generation), oldest first
        self._verified: OrderedDict[str, tuple[Principal, float, int]] = OrderedDict()

    def verify(self, token: str) -> Principal | str:
        """The token's principal, or why it is invalid (naming the rule, never a value)."""
        known = self._verified.get(token)
        if known is not None:
            self.keys.refresh()
            principal, expiry, generation = known
            if generation == self.keys.generation and time.time() < expiry:
                return principal
            del self._verified[token]
        verdict = self._verify(token)
        if isinstance(verdict, tuple):
            principal, expiry = verdict
            self._verified[token] = (principal, expiry, self.keys.generation)
            if len(self._verified) > VERIFIED_CACHE:
                self._verified.popitem(last=False)
            return principal
        return verdict

    def _verify(self, token: str) -> tuple[Principal, float] | str:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "malformed token"
        if header.get("alg") not in ALGORITHMS:
            return f"token algorithm not accepted (accepted: {', '.join(ALGORITHMS)})"
        kid = header.get("kid")
        key = self.keys.key(kid) if isinstance(kid, str) else None
        if key is None:
            return "token signed by a key that is not in the key set"
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer or None,
                leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            return "token expired"
        except jwt.InvalidAudienceError:
            return "token issued for another audience"
        except jwt.InvalidIssuerError:
            return "token issued by another issuer"
        except jwt.MissingRequiredClaimError as error:
            return f"token without the required claim {error.claim}"
        except jwt.ImmatureSignatureError:
            return "token not valid yet"
        except jwt.InvalidSignatureError:
            return "token signature does not verify"
        except jwt.PyJWTError:
            return "malformed token"
        scope = claims.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        return Principal(f"token:{claims['sub']}", scopes), float(claims["exp"]) + LEEWAY_S


class Access:
    """Authentication and authorization of the protected paths.

    Credentials: ``Authorization: Bearer <token or API key>`` or ``X-API-Key: <API key>``.
    With both a key and a key set configured, either is accepted. The API key has no scopes
    to narrow it: it grants every scope (for least privilege, use tokens and unset the key).
    With neither configured the API is open and every caller holds every scope.
    """

    def __init__(self, api_key: str = "", tokens: TokenVerifier | None = None) -> None:
        self.api_key = api_key.encode()
        self.tokens = tokens

    @property
    def open(self) -> bool:
        """No credentials configured: everyone may call."""
        return not self.api_key and self.tokens is None

    def check(self, headers: Mapping[bytes, bytes], path: str, address: str) -> Principal | Refusal:
        """The caller of a request to ``path``, or the 401/403 refusing it."""
        if self.open:
            return Principal(f"address:{address}", frozenset(SCOPES.values()))
        principal = self._authenticate(headers)
        if isinstance(principal, Refusal):
            return principal
        needed = SCOPES.get(path, ADMIN)
        if needed not in principal.scopes:
            challenge = f'Bearer error="insufficient_scope", scope="{needed}"'
            return Refusal(403, f"this endpoint needs the scope {needed}", challenge)
        return principal

    def _authenticate(self, headers: Mapping[bytes, bytes]) -> Principal | Refusal:
        accepted = " or ".join(
            name for name, on in (("API key", self.api_key), ("token", self.tokens)) if on
        )
        given = headers.get(b"x-api-key")
        authorization = headers.get(b"authorization")
        if authorization is not None:
            scheme, _, value = authorization.partition(b" ")
            if scheme.lower() != b"bearer" or not value.strip():
                return _invalid(f"malformed Authorization header: send Bearer <{accepted}>")
            given = value.strip()
        if given is None:
            message = f"missing credentials: send Authorization: Bearer <{accepted}>"
            return Refusal(401, message, "Bearer")
        if self.api_key and hmac.compare_digest(given, self.api_key):
            return Principal("api-key", frozenset(SCOPES.values()))
        if authorization is None and not self.api_key:
            return _invalid("no API key is configured: send Authorization: Bearer <token>")
        if self.tokens is None or authorization is None:
            return _invalid("wrong API key")
        verdict = self.tokens.verify(given.decode("latin-1"))
        if isinstance(verdict, str):
            if self.api_key and given.count(b".") != 2:  # no JWT: a mistyped key
                return _invalid("wrong API key")
            return _invalid(verdict)
        return verdict


def _invalid(error: str) -> Refusal:
    return Refusal(401, error, 'Bearer error="invalid_token"')


class RateLimiter:
    """A token bucket per client: ``rate`` requests per ``period`` seconds, bursts included.

    Memory is bounded to ``max_clients`` buckets.

    A bucket refilled to the brim is the same as none, so idle clients are forgotten; beyond
    ``max_clients`` the least recently seen client is forgotten (it starts again full).
    """

    def __init__(
        self,
        rate: int,
        period: float,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.period = period
        self.per_second = rate / period
        self.max_clients = max_clients
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> int:
        """0 if ``client`` may go on (one request counted), else whole seconds to wait."""
        now = self.clock()
        tokens, last = self.buckets.pop(client, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.per_second)
        self._forget_idle(now)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0
        self.buckets[client] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.per_second))

    def _forget_idle(self, now: float) -> None:
        """Drops the buckets full again (oldest first), then any over ``max_clients - 1``."""
        while self.buckets:
            client, (_, last) = next(iter(self.buckets.items()))
            if now - last < self.period and len(self.buckets) < self.max_clients:
                return
            del self.buckets[client]


def rate_limit_from_environment(env: Mapping[str, str] | None = None) -> RateLimiter | None:
    """The rate limit ``MLOPS_RATE_LIMIT`` (``<count>/<s|min|h>`` per client), None if unset."""
    raw = (os.environ if env is None else env).get(RATE_LIMIT_VARIABLE, "").strip()
    if not raw or raw.lower() == "off":
        return None
    match = _RATE.fullmatch(raw.lower())
    if match is None or int(match[1]) < 1:
        raise RuntimeError(
            f"{RATE_LIMIT_VARIABLE} must be <count>/<s|min|h> with a count of at least 1 "
            f"(e.g. 100/s), or off; got {raw!r}"
        )
    return RateLimiter(int(match[1]), _PERIODS[match[2]])


def access_from_environment(env: Mapping[str, str] | None = None) -> Access:
    """Who may call the API, from ``MLOPS_API_KEY`` and ``MLOPS_JWT_*``.

    Refuses to run production (``MLOPS_ENV=production``) with neither, a key set without an
    audience, or a key set that cannot be read.
    """
    env = dict(os.environ if env is None else env)
    key = env.get(API_KEY_VARIABLE, "")
    source = env.get(JWT_KEYS_VARIABLE, "").strip()
    if not key and not source and env.get(ENV_VARIABLE, "local") == "production":
        raise RuntimeError(
            f"{API_KEY_VARIABLE} or {JWT_KEYS_VARIABLE} must be set when "
            f"{ENV_VARIABLE}=production: the prediction endpoints are not served without "
            "an API key or a token key set"
        )
    if not source:
        return Access(key)
    audience = env.get(JWT_AUDIENCE_VARIABLE, "").strip()
    if not audience:
        raise RuntimeError(
            f"{JWT_AUDIENCE_VARIABLE} must be set with {JWT_KEYS_VARIABLE}: without it, a "
            "token issued for another service would be accepted"
        )
    try:
        keys = KeySet(source)
    except KeySetError as error:
        raise RuntimeError(f"{JWT_KEYS_VARIABLE}: {error}") from None
    issuer = env.get(JWT_ISSUER_VARIABLE, "").strip()
    return Access(key, TokenVerifier(keys, audience, issuer))
