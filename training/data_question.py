"""One generated question (`Q`) and the hold-out rule, shared by the task generators
(data_chat, data_calc, data_sql, data_time) and the conversation builder in data.py.

Every question has a key (intent, phrasing, slot values). A key is held out of training
when its phrasing is the last one of an intent that has at least four, or when its hash
falls in a held-out bucket (1 in HOLDOUT_BUCKETS).
"""

from __future__ import annotations

import random
import zlib

HOLDOUT_BUCKETS = 8  # 1 in 8 slot combinations is held out


def _stable_hash(key) -> int:
    return zlib.crc32(repr(key).encode())


def _pick(rng: random.Random, phrasings: list[str]) -> tuple[int, str]:
    i = rng.randrange(len(phrasings))
    return i, phrasings[i]


def _heldout_phrasing(i: int, phrasings: list) -> bool:
    return len(phrasings) >= 4 and i == len(phrasings) - 1


class Q:
    """One generated question: its messages plus the hold-out key."""

    def __init__(self, kind, intent, phrasing_idx, n_phrasings, slots, user, reply=None,
                 tool=None, args=None, result=None, answer=None):
        self.kind, self.intent = kind, intent
        self.phrasing_idx, self.n_phrasings, self.slots = phrasing_idx, n_phrasings, slots
        self.user, self.reply = user, reply
        self.tool, self.args, self.result, self.answer = tool, args, result, answer

    def heldout(self) -> str | None:
        """Why this question belongs to the eval set ("phrasing": a phrasing never used in
        training; "combination": an unseen phrasing/slot combination), or None."""
        if self.n_phrasings >= 4 and self.phrasing_idx == self.n_phrasings - 1:
            return "phrasing"
        if _stable_hash((self.intent, self.phrasing_idx, self.slots)) % HOLDOUT_BUCKETS == 0:
            return "combination"
        return None
