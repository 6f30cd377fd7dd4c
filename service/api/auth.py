"""Bearer tokens: creation, checking, revocation, and per-token rate limits.

A token reads ``mg_<id>_<secret>``: the id finds its row, the secret is
checked against a SHA-256 hash with a constant-time comparison, and only
that hash is stored, so a token is shown once, at creation. Tokens can
expire and be revoked. On first start with no token at all, the service
creates an admin user and token and writes it to a 0600 file in the data
directory (the quickstart reads it from there).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, select, update

from ..db.models import Token, User
from ..db.ops import aware, lock_named, utcnow
from ..db.session import Database
from .problems import Problem

PREFIX = "mg_"
bearer = HTTPBearer(auto_error=False, description="a memogrid token: mg_<id>_<secret>")


@dataclass(frozen=True)
class Principal:
    """The user a request acts for, and the token it came with."""

    user_id: str
    name: str
    is_admin: bool
    token_id: str
    #: the token's expiry as a Unix time, if it has one
    expires_at: float | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_user(db: Database, name: str, *, admin: bool = False) -> str:
    with db.write() as s:
        return _ensure_user_in(s, name, admin)


def _ensure_user_in(s: Any, name: str, admin: bool) -> str:
    lock_named(s, f"memogrid-user:{name}")  # two first tokens of one new user
    user = s.scalars(select(User).where(User.name == name)).first()
    if user is None:
        user = User(id=uuid.uuid4().hex, name=name, is_admin=admin, created_at=utcnow())
        s.add(user)
        s.flush()
    return str(user.id)


def create_token(
    db: Database,
    user: str,
    *,
    name: str = "",
    expires_in: timedelta | None = None,
    admin: bool = False,
) -> str:
    """A new token for ``user`` (created if new); the only time it is shown.
    ``expires_in``, if given, is a positive lifetime."""
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError(f"a token's lifetime is positive, not {expires_in}")
    _check_label("a user name", user, spaces=False)
    _check_label("a token's name", name, spaces=True)
    with db.write() as s:
        return _create_token_in(s, user, name, expires_in, admin)


#: longest user or token name (the columns' length)
NAME_MAX = 128


def _check_label(what: str, text: str, *, spaces: bool) -> None:
    """Refuse a name another could be mistaken for ("alice " beside "alice")
    or that forges lines in ``token list`` (a newline in it)."""
    if not spaces and not text:
        raise ValueError(f"{what} is needed")
    bad = [c for c in text if not c.isprintable() or (c.isspace() and (not spaces or c != " "))]
    if bad or len(text) > NAME_MAX or text != text.strip():
        raise ValueError(
            f"{what} is at most {NAME_MAX} printable characters"
            + (", spaces allowed inside" if spaces else " with no spaces")
            + f", not {text!r}"
        )


def _create_token_in(
    s: Any, user: str, name: str, expires_in: timedelta | None, admin: bool
) -> str:
    user_id = _ensure_user_in(s, user, admin)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    s.add(
        Token(
            id=token_id,
            user_id=user_id,
            secret_hash=_hash(secret),
            name=name,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
    )
    return f"{PREFIX}{token_id}_{secret}"


def token_id_of(token: str) -> str:
    """A token's id, from the id or from the whole token."""
    return token.removeprefix(PREFIX).split("_")[0]


def revoke_token(db: Database, token_id: str) -> bool:
    token_id = token_id_of(token_id)
    with db.write() as s:
        result = s.execute(
            update(Token)
            .where(Token.id == token_id, Token.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return bool(getattr(result, "rowcount", 0))


def list_tokens(db: Database) -> list[dict[str, object]]:
    now = utcnow()
    with db.read() as s:
        rows = s.execute(
            select(Token, User.name).join(User, User.id == Token.user_id).order_by(Token.created_at)
        ).all()
    return [
        {
            "id": t.id,
            "user": user,
            "name": t.name,
            "created_at": aware(t.created_at),
            "expires_at": aware(t.expires_at),
            "revoked": t.revoked_at is not None,
            "expired": (aware(t.expires_at) or now) < now,
            "last_used_at": aware(t.last_used_at),
        }
        for t, user in rows
    ]


def authenticate(db: Database, raw: str) -> Principal | None:
    """The principal for a raw token, or ``None`` (unknown, wrong, expired, revoked)."""
    if not raw.startswith(PREFIX) or raw.count("_") < 2:
        return None
    token_id, _, secret = raw[len(PREFIX) :].partition("_")
    if not token_id or len(token_id) > 32 or not secret:
        return None
    with db.read() as s:
        row = s.execute(
            select(Token, User).join(User, User.id == Token.user_id).where(Token.id == token_id)
        ).first()
    # hash and compare even for an unknown id, so timing tells nothing
    expected = row[0].secret_hash if row is not None else _hash("")
    if not hmac.compare_digest(_hash(secret), expected) or row is None:
        return None
    token, user = row
    now = utcnow()
    expires = aware(token.expires_at)
    if token.revoked_at is not None or (expires is not None and expires <= now):
        return None
    return Principal(
        user.id, user.name, user.is_admin, token.id, expires.timestamp() if expires else None
    )


def _touch(db: Database, token_id: str) -> None:
    """Record when a token was last used (at most once per auth-cache period)."""
    with db.write() as s:
        s.execute(update(Token).where(Token.id == token_id).values(last_used_at=utcnow()))


def ensure_admin_token(db: Database, token_file: Path) -> Path | None:
    """On a database without tokens, create the admin's and write it 0600
    (one admin token, however many services start at once on the database)."""
    with db.write() as s:
        lock_named(s, "memogrid-first-token")
        if s.scalar(select(func.count()).select_from(Token)):
            return None
        token = _create_token_in(s, "admin", "created on first start", None, True)
        # written before the token is committed: a file that cannot be
        # written (a directory in its way) left a token no one could read,
        # and no later start wrote another
        token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # never through a symlink someone left in the data directory
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(token_file, 0o600)
    return token_file


class RateLimiter:
    """A token bucket per token: ``per_minute`` requests, bursts up to that many."""

    #: buckets held before the full ones are swept (a full bucket is as good
    #: as none); then twice as many as are left, at least this many
    SWEEP_AT = 1024

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._sweep_at = self.SWEEP_AT
        self._clock = clock
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0 if the request may go; else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) >= self._sweep_at:
                # one per token and per address that sent a bad one: without
                # this, every address ever seen stayed for good
                self._buckets = {
                    k: (t, at)
                    for k, (t, at) in self._buckets.items()
                    if t + (now - at) * self.rate < self.capacity
                }
                self._sweep_at = max(self.SWEEP_AT, 2 * len(self._buckets))
            return wait


class AuthCache:
    """Recently checked tokens, for ``ttl`` seconds: a status poll costs no token query.

    Keyed by the token's hash; a revoked token stops working within ``ttl``
    seconds, an expiring one at its expiry.
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, raw: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        key = _hash(raw)
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or hit[1] <= time.monotonic():
            return None
        return hit[0]

    def put(self, raw: str, principal: Principal, expires_at: float | None) -> None:
        if self.ttl <= 0:
            return
        until = time.monotonic() + self.ttl
        if expires_at is not None:
            until = min(until, time.monotonic() + max(0.0, expires_at - time.time()))
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[_hash(raw)] = (principal, until)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The authenticated principal; 401 without a valid token, 429 over the rate."""
    import anyio

    challenge = {"WWW-Authenticate": 'Bearer realm="memogrid"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401, "a bearer token is required (Authorization: Bearer mg_...)", headers=challenge
        )
    svc = request.app.state.services
    raw = credentials.credentials
    principal = svc.auth_cache.get(raw)
    if principal is None:
        principal = await anyio.to_thread.run_sync(authenticate, svc.db, raw)
        if principal is not None:
            svc.auth_cache.put(raw, principal, principal.expires_at)
            await anyio.to_thread.run_sync(_touch, svc.db, principal.token_id)
    if principal is None:
        # wrong tokens count against the caller's address: guessing is rate-limited
        host = request.client.host if request.client else "unknown"
        if svc.limiter.allow(f"failed:{host}") > 0:
            raise Problem(
                429,
                "too many requests with invalid tokens from this address",
                headers={"Retry-After": "60"},
            )
        raise Problem(401, "the token is unknown, expired or revoked", headers=challenge)
    wait = svc.limiter.allow(principal.token_id)
    if wait > 0:
        raise Problem(
            429,
            f"too many requests for this token: at most {svc.settings.rate_limit_per_minute} "
            "per minute",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
