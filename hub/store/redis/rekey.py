"""Re-sealing everything the Redis store holds sealed with the keyring's
current key (`hub rekey`), safe beside running workers.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from hub.crypto import Keyring
from hub.store.redis import scripts
from hub.store.redis.base import RedisBase
from hub.store.redis.keys import IDX, P


class RedisRekey(RedisBase):
    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        super().__init__(client, keyring)
        self._swap = self._script(scripts.SWAP)

    def rekey(self, batch: int = 500) -> dict[str, int]:
        """Re-seal every sealed value not sealed with the keyring's current key
        (after a new key was put first). Safe beside running workers: a value
        changed meanwhile is left alone (a worker wrote it with the current key)."""
        counts = {"scanned": 0, "resealed": 0}
        for pattern in (f"{IDX}mem:*", f"{P}gold:*", f"{P}cons:*", f"{P}srv:*", f"{P}synd:*"):
            keys = []
            for key in self.client.scan_iter(match=pattern, count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    self._rekey_keys(keys, counts)
                    keys = []
            self._rekey_keys(keys, counts)
        return counts

    def _rekey_keys(self, keys: list[bytes], counts: dict[str, int]) -> None:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        swaps: dict[bytes, list] = {}
        for key, fields in zip(keys, pipe.execute()):
            name = key.decode()
            for field, value in fields.items():
                field_name = field.decode()
                if name.startswith((f"{P}cons:", f"{P}srv:")):
                    at, tie, sealed = value.split(b"|", 2)
                    prefix = at + b"|" + tie + b"|"
                elif name.startswith(f"{IDX}mem:") and field_name not in ("f", "d"):
                    continue
                else:
                    sealed, prefix = value, b""
                counts["scanned"] += 1
                if self.keyring.is_current(sealed):
                    continue
                fresh = self._seal(self._open(sealed, name, field_name), name, field_name)
                swaps.setdefault(key, []).extend((field, value, prefix + fresh))
        if swaps:
            counts["resealed"] += sum(int(n) for n in self._eval_each(self._swap, list(swaps.items())))
