"""Data minimisation: the slice of a golden record one target may receive.

Pure. A projection holds `golden_id` and the target's configured fields only;
its hash tells whether a golden change matters to that target at all.
"""

from __future__ import annotations

import hashlib

import orjson

from hub.config import TargetConfig


def project(golden: dict, target: TargetConfig) -> dict:
    view = {"golden_id": golden["golden_id"]}
    for name in target.fields:
        view[name] = golden.get(name)
    return view


def target_key(golden: dict, target: TargetConfig) -> str | None:
    return golden.get(target.key)


def encode_json(view: dict) -> bytes:
    return orjson.dumps(view, option=orjson.OPT_SORT_KEYS)


def fingerprint(payload: bytes) -> str:
    return hashlib.blake2s(payload, digest_size=12).hexdigest()
