"""Who may use the workbench: users with roles, their sessions, their API
tokens, and throttled logins.

Passwords are kept as Argon2id hashes (argon2-cffi, its default cost: about
64 MiB and a few tens of milliseconds per check); a login for an unknown
user checks a dummy hash, so the answer takes as long either way. Sessions
are random ids held in an HttpOnly, SameSite=Strict cookie; Redis keeps only
their SHA-256, with the user, the role and the session's CSRF token, and
forgets them after `session_idle_s` without a request or `session_ttl_s`
after login. Steward API tokens (for `hub steward`) are kept the same way,
as digests. Failed logins are counted per user name and per address in
fixed windows; over the limit, logins are refused without checking the
password. Every key has a hash tag of its own (Redis Cluster).

Roles: viewer (reads), steward (reads and decides: review, split, link,
subject access, erasure), admin (all that, and users).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "steward", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# what each action needs
NEEDS = {"read": "viewer", "decide": "steward", "subject_access": "steward", "erase": "steward", "admin": "admin"}
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")

P = "hub:wb:"


def may(role: str | None, action: str) -> bool:
    return role in _RANK and _RANK[role] >= _RANK[NEEDS[action]]


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise ValueError("a user name is 1-64 characters: lower-case letters, digits, . _ - @")
    return name


def check_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("a password has at least 12 characters")
    return password


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: str
    csrf: str
    created_ms: int


class Accounts:
    """Users, sessions, tokens and login throttling in Redis."""

    def __init__(self, client, session_ttl_s: int = 8 * 3600, session_idle_s: int = 3600,
                 login_attempts: int = 5, login_window_s: int = 900):
        self.client = client
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self.session_ttl_s, self.session_idle_s = session_ttl_s, session_idle_s
        self.login_attempts, self.login_window_s = login_attempts, login_window_s

    # users
    @staticmethod
    def _user_key(name: str) -> str:
        return f"{P}user:{{{name}}}"

    def add_user(self, name: str, role: str, password: str) -> str:
        name = check_name(name)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        check_password(password)
        if not self.client.hsetnx(self._user_key(name), "hash", self.hasher.hash(password)):
            raise ValueError(f"user {name} exists already")
        self.client.hset(self._user_key(name), mapping={"role": role, "disabled": "0",
                                                        "created_at": int(time.time() * 1000)})
        self.client.sadd(f"{P}users", name)
        return name

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        if not self.user(name):
            raise ValueError(f"no user {name}")
        self.client.hset(self._user_key(name), "hash", self.hasher.hash(password))

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not self.user(name):
            raise ValueError(f"no user {name}")
        self.client.hset(self._user_key(name), "role", role)

    def set_disabled(self, name: str, disabled: bool) -> None:
        if not self.user(name):
            raise ValueError(f"no user {name}")
        self.client.hset(self._user_key(name), "disabled", "1" if disabled else "0")

    def user(self, name: str) -> dict | None:
        fields = self.client.hgetall(self._user_key(name))
        if not fields or b"role" not in fields:
            return None
        return {"name": name, "role": fields[b"role"].decode(), "disabled": fields.get(b"disabled") == b"1",
                "created_at": int(fields.get(b"created_at") or 0)}

    def users(self) -> list[dict]:
        names = sorted(n.decode() for n in self.client.smembers(f"{P}users"))
        return [u for u in (self.user(n) for n in names) if u]

    # logins
    def _throttle_keys(self, name: str, address: str) -> tuple[str, str]:
        return f"{P}login:{{{digest(name)[:24]}}}", f"{P}login_addr:{{{digest(address)[:24]}}}"

    def throttled(self, name: str, address: str) -> bool:
        by_name, by_address = self._throttle_keys(name, address)
        pipe = self.client.pipeline(transaction=False)  # two slots: no MGET on a cluster
        pipe.get(by_name)
        pipe.get(by_address)
        failures = [int(c or 0) for c in pipe.execute()]
        return failures[0] >= self.login_attempts or failures[1] >= self.login_attempts * 4

    def _failed(self, name: str, address: str) -> None:
        for key in self._throttle_keys(name, address):  # two slots: a pipeline each
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, 0, ex=self.login_window_s, nx=True)  # the window starts at the first failure
            pipe.incr(key)
            pipe.execute()

    def authenticate(self, name: str, password: str, address: str) -> tuple[dict | None, str]:
        """(user, "ok") or (None, why: "throttled", "invalid", "disabled")."""
        try:
            name = check_name(name)
        except ValueError:
            name = "-"
        if self.throttled(name, address):
            return None, "throttled"
        user = self.user(name)
        stored = self.client.hget(self._user_key(name), "hash") if user else None
        try:
            self.hasher.verify(stored.decode() if stored else self._dummy, password)
            ok = stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self._failed(name, address)
            return None, "invalid"
        if user["disabled"]:
            return None, "disabled"
        if self.hasher.check_needs_rehash(stored.decode()):
            self.client.hset(self._user_key(name), "hash", self.hasher.hash(password))
        return user, "ok"

    # sessions
    @staticmethod
    def _session_key(session_id: str) -> str:
        return f"{P}session:{{{digest(session_id)}}}"

    def open_session(self, user: dict) -> str:
        session_id = secrets.token_urlsafe(32)
        key = self._session_key(session_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={"user": user["name"], "role": user["role"], "csrf": secrets.token_urlsafe(32),
                                "created": int(time.time() * 1000)})
        pipe.expire(key, min(self.session_idle_s, self.session_ttl_s))
        pipe.execute()
        return session_id

    def session(self, session_id: str | None, now_ms: int) -> Session | None:
        """The session, its idle time restarted; None when unknown, expired, or
        its user disabled or gone (a role change applies at once)."""
        if not session_id or len(session_id) > 128:
            return None
        key = self._session_key(session_id)
        fields = self.client.hgetall(key)
        if not fields:
            return None
        created = int(fields[b"created"])
        user = self.user(fields[b"user"].decode())
        if user is None or user["disabled"] or now_ms - created > self.session_ttl_s * 1000:
            self.client.delete(key)
            return None
        left_s = self.session_ttl_s - (now_ms - created) // 1000
        self.client.expire(key, max(1, min(self.session_idle_s, left_s)))
        return Session(user["name"], user["role"], fields[b"csrf"].decode(), created)

    def close_session(self, session_id: str | None) -> None:
        if session_id:
            self.client.delete(self._session_key(session_id))

    # API tokens (hub steward ...)
    def new_token(self, name: str) -> str:
        if not self.user(name):
            raise ValueError(f"no user {name}")
        token = "hubst_" + secrets.token_urlsafe(32)
        self.client.set(f"{P}token:{{{digest(token)}}}", name)
        return token

    def revoke_token(self, token: str) -> bool:
        return bool(self.client.delete(f"{P}token:{{{digest(token)}}}"))

    def token_user(self, token: str | None) -> dict | None:
        """The enabled user a token belongs to, else None."""
        if not token:
            return None
        name = self.client.get(f"{P}token:{{{digest(token)}}}")
        user = self.user(name.decode()) if name else None
        return user if user and not user["disabled"] else None


def csrf_ok(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode())
