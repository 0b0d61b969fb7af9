"""Workbench accounts: slow password hashes, roles, sessions that end,
API tokens kept as digests, throttled logins; every key in a slot of its own."""

from __future__ import annotations

import pytest
import redis

from hub.workbench import auth
from hub.workbench.auth import Accounts

PASSWORD = "a long enough password"


@pytest.fixture
def accounts(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return Accounts(client, session_ttl_s=3600, session_idle_s=600, login_attempts=3, login_window_s=60)


def test_roles():
    assert auth.may("viewer", "read") and not auth.may("viewer", "decide")
    assert auth.may("steward", "decide") and auth.may("steward", "erase") and not auth.may("steward", "admin")
    assert auth.may("admin", "admin") and not auth.may(None, "read") and not auth.may("root", "read")


def test_users_and_passwords(accounts):
    accounts.add_user("Stella", "steward", PASSWORD)
    assert accounts.user("stella")["role"] == "steward"
    stored = accounts.client.hget("hub:wb:user:{stella}", "hash").decode()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(ValueError, match="exists"):
        accounts.add_user("stella", "viewer", PASSWORD)
    with pytest.raises(ValueError, match="12 characters"):
        accounts.add_user("sam", "viewer", "short")
    with pytest.raises(ValueError, match="role"):
        accounts.add_user("sam", "root", PASSWORD)
    user, why = accounts.authenticate("stella", PASSWORD, "10.0.0.1")
    assert why == "ok" and user["name"] == "stella"
    assert accounts.authenticate("stella", "wrong", "10.0.0.1") == (None, "invalid")
    assert accounts.authenticate("nobody", PASSWORD, "10.0.0.1") == (None, "invalid")
    accounts.set_disabled("stella", True)
    assert accounts.authenticate("stella", PASSWORD, "10.0.0.2") == (None, "disabled")


def test_logins_are_throttled_per_user_and_address(accounts):
    accounts.add_user("ada", "admin", PASSWORD)
    for _ in range(3):
        assert accounts.authenticate("ada", "wrong", "10.0.0.1")[1] == "invalid"
    assert accounts.authenticate("ada", PASSWORD, "10.0.0.9") == (None, "throttled")  # the name, from anywhere
    accounts.add_user("bob", "viewer", PASSWORD)
    assert accounts.authenticate("bob", PASSWORD, "10.0.0.1")[1] == "ok"  # the address is not spent yet
    assert 0 < accounts.client.ttl(accounts._throttle_keys("ada", "x")[0]) <= 60


def test_sessions_end_and_follow_the_user(accounts):
    accounts.add_user("stella", "steward", PASSWORD)
    user, _ = accounts.authenticate("stella", PASSWORD, "a")
    session_id = accounts.open_session(user)
    session = accounts.session(session_id, now_ms=0 + accounts.user("stella")["created_at"])
    assert session.user == "stella" and session.role == "steward" and len(session.csrf) > 30
    assert not any(session_id.encode() in key for key in accounts.client.keys("*"))  # only its digest is kept
    accounts.set_role("stella", "viewer")
    assert accounts.session(session_id, session.created_ms).role == "viewer"  # a role change applies at once
    assert accounts.session(session_id, session.created_ms + 3_600_001) is None  # past the session's life
    assert accounts.session(session_id, session.created_ms) is None  # and gone
    other = accounts.open_session(user)
    accounts.set_disabled("stella", True)
    assert accounts.session(other, session.created_ms) is None
    assert accounts.session("forged", 0) is None and accounts.session(None, 0) is None


def test_tokens(accounts):
    accounts.add_user("stella", "steward", PASSWORD)
    token = accounts.new_token("stella")
    assert accounts.token_user(token)["name"] == "stella"
    assert not any(token.encode() in key or token.encode() == accounts.client.get(key)
                   for key in accounts.client.keys("hub:wb:token:*"))
    assert accounts.token_user("hubst_guess") is None and accounts.token_user(None) is None
    accounts.set_disabled("stella", True)
    assert accounts.token_user(token) is None
    accounts.set_disabled("stella", False)
    assert accounts.revoke_token(token) and accounts.token_user(token) is None


def test_csrf():
    assert auth.csrf_ok("abc", "abc") and not auth.csrf_ok("abc", "abd") and not auth.csrf_ok("abc", None)
