"""Look-alike identifiers: an e-mail address written to pass for another.

Pure. `ward.sarah@yаhoo.co.uk` with a Cyrillic `а` is a different address
that a person (and a string similarity) reads as `ward.sarah@yahoo.co.uk`.
Such an address is kept as its source sent it, flagged as a quality issue
(`email.lookalike`, hub.standardise) and never counted as identifier
evidence: it yields no e-mail match feature and no e-mail blocking key
(hub.matching.features), so it cannot pull a record into someone else's
golden record.

A label (the local part, each label of the domain) is a look-alike when it
mixes scripts (Unicode TR39: Latin with Cyrillic or Greek, say; Latin with
the CJK scripts Japanese, Chinese and Korean write together is allowed), or
when every character of it is ASCII or looks like an ASCII character
(`gооgle` in Cyrillic `о`, `ɡoogle` with a Latin script g): it reads as a
plain ASCII address that it is not. Genuine international addresses
(`müller@bücher.de`, `почта@пример.рф`, `たなか@例え.jp`) are neither. The
script and look-alike data are Unicode's (TR39 confusables, through the
confusable-homoglyphs package). ASCII addresses cost one `isascii()`.
"""

from __future__ import annotations

import re
from functools import lru_cache


_LABELS = re.compile(r"[@.]")
_NEUTRAL = frozenset({"COMMON", "INHERITED"})
# TR39 "highly restrictive": Latin may go with the scripts one language writes together
_ALLOWED_MIXES = (frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}), frozenset({"LATIN", "HAN", "BOPOMOFO"}),
                  frozenset({"LATIN", "HAN", "HANGUL"}))


# keyed by single characters (the few non-ASCII ones addresses hold); addresses themselves are not cached:
# an ASCII one costs one isascii(), a non-ASCII one a lookup per character
@lru_cache(maxsize=512)
def _script(char: str) -> str:
    from confusable_homoglyphs import categories

    return categories.alias(char)


@lru_cache(maxsize=512)
def _ascii_twin(char: str) -> bool:
    """Whether a non-ASCII character looks like an ASCII one (TR39 confusables)."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(char, greedy=True) or ()
    return any(h["c"].isascii() for entry in found for h in entry["homoglyphs"])


def _label_lookalike(label: str) -> bool:
    if label.isascii():
        return False
    scripts = {_script(c) for c in label} - _NEUTRAL
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_MIXES):
        return True
    return all(c.isascii() or _ascii_twin(c) for c in label)


def lookalike(address: str) -> bool:
    """Whether an (already standardised) e-mail address is written to pass for another."""
    if address.isascii():
        return False
    return any(_label_lookalike(label) for label in _LABELS.split(address) if label)
