"""A local token issuer, to try the service's token access without an identity provider.

``mlops-assets api-token keys`` creates a key set under the state folder
(``<state>/api_auth/jwks.json``, the public keys the service reads, and ``private/<kid>.pem``,
mode 0600); ``mint`` signs a token with its newest key; ``rotate`` adds a new signing key (the
old one stays published, so its tokens keep working); ``retire`` drops every key but the
newest, whose tokens are refused from then on. In production an identity provider issues the
tokens and publishes its key set (``MLOPS_JWT_KEYS`` = its JWKS URL).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from mlops_assets import settings
from mlops_assets.serving.auth import (
    ADMIN,
    JWT_AUDIENCE_VARIABLE,
    JWT_ISSUER_VARIABLE,
    JWT_KEYS_VARIABLE,
    PREDICT,
)

KEYS_FOLDER = "api_auth"  # below the state folder
PUBLIC_FILE = "jwks.json"
ALGORITHM = "ES256"
DEFAULT_AUDIENCE = "mlops-assets"
DEFAULT_EXPIRY_S = 3600


def key_folder(state: Path | None = None) -> Path:
    """The local key set's folder: ``<state>/api_auth``."""
    return (state or settings.locations().state) / KEYS_FOLDER


def _published(folder: Path) -> list[dict[str, Any]]:
    path = folder / PUBLIC_FILE
    return list(json.loads(path.read_text())["keys"]) if path.exists() else []


def _publish(folder: Path, keys: list[dict[str, Any]]) -> None:
    """Replaces the public set at once (a reader never sees half a file)."""
    partial = folder / f".{PUBLIC_FILE}.partial"
    partial.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    os.replace(partial, folder / PUBLIC_FILE)


def add_key(folder: Path) -> str:
    """Creates an ES256 key: private PEM (0600) and its public JWK last in the set; its kid."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    private = folder / "private"
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    kid = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert isinstance(public, dict)
    public.update(kid=kid, alg=ALGORITHM, use="sig")
    _publish(folder, [*_published(folder), public])
    return kid


def ensure_keys(folder: Path) -> str:
    """The newest key's kid, creating the set if there is none."""
    keys = _published(folder)
    return str(keys[-1]["kid"]) if keys else add_key(folder)


def retire_old_keys(folder: Path) -> list[str]:
    """Keeps only the newest key in the set (and its private file); the kids dropped."""
    keys = _published(folder)
    if not keys:
        raise FileNotFoundError(f"no key set in {folder}: run `mlops-assets api-token keys`")
    dropped = [str(k["kid"]) for k in keys[:-1]]
    _publish(folder, keys[-1:])
    for kid in dropped:
        (folder / "private" / f"{kid}.pem").unlink(missing_ok=True)
    return dropped


def mint(
    folder: Path,
    subject: str,
    scopes: list[str],
    audience: str,
    expires_in: int = DEFAULT_EXPIRY_S,
    issuer: str = "",
    kid: str | None = None,
) -> str:
    """A token for ``subject`` with ``scopes``, signed by key ``kid`` (default: the newest)."""
    import jwt

    kid = kid or ensure_keys(folder)
    pem = (folder / "private" / f"{kid}.pem").read_bytes()
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + expires_in,
        "scope": " ".join(scopes),
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, pem, algorithm=ALGORITHM, headers={"kid": kid})


def _run(args: argparse.Namespace) -> int:
    folder = key_folder(args.state)
    if args.action == "mint":
        audience = args.audience or os.environ.get(JWT_AUDIENCE_VARIABLE) or DEFAULT_AUDIENCE
        issuer = args.issuer or os.environ.get(JWT_ISSUER_VARIABLE, "")
        scopes = args.scope or [PREDICT]
        print(mint(folder, args.subject, scopes, audience, args.expires_in, issuer))
        return 0
    if args.action == "retire":
        dropped = retire_old_keys(folder)
        print(f"retired {', '.join(dropped) or 'nothing'}; signing key {ensure_keys(folder)}")
        return 0
    kid = add_key(folder) if args.action == "rotate" else ensure_keys(folder)
    print(f"signing key {kid}; public keys in {folder / PUBLIC_FILE}")
    keys = f"{JWT_KEYS_VARIABLE}={folder / PUBLIC_FILE}"
    print(f"export {keys} {JWT_AUDIENCE_VARIABLE}={DEFAULT_AUDIENCE}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``api-token`` command of the CLI."""
    command = sub.add_parser(
        "api-token",
        help="a local key set and tokens for the prediction service (keys, mint, rotate, retire)",
    )
    command.add_argument(
        "action",
        choices=("keys", "mint", "rotate", "retire"),
        help="keys: create the key set if missing; mint: print a token; rotate: add a new "
        "signing key; retire: drop every key but the newest",
    )
    command.add_argument("--state", type=Path, help="state folder (default: $MLOPS_STATE_DIR)")
    command.add_argument("--subject", default=os.environ.get("USER", "local"), help="sub claim")
    command.add_argument(
        "--scope",
        action="append",
        choices=(PREDICT, ADMIN),
        help=f"scope granted (repeatable; default {PREDICT})",
    )
    command.add_argument(
        "--expires-in", type=int, default=DEFAULT_EXPIRY_S, help="seconds until the token expires"
    )
    command.add_argument(
        "--audience", help=f"aud claim (default: ${JWT_AUDIENCE_VARIABLE} or {DEFAULT_AUDIENCE})"
    )
    command.add_argument("--issuer", help=f"iss claim (default: ${JWT_ISSUER_VARIABLE} or none)")
    command.set_defaults(func=_run)
