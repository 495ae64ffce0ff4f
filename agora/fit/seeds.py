"""Seeds derived from values (a seed and an epoch; a seed, an epoch and a source row), the same in every
process: what makes a fit's random draws, and G's, reproducible and resumable."""

from __future__ import annotations

import hashlib
import json


def stable_seed(*parts) -> int:
    """A 64-bit seed from a JSON-able value; unlike ``hash`` it is not salted per process."""

    def as_plain(o):  # numpy scalars -> Python numbers
        return o.item() if hasattr(o, "item") else str(o)

    digest = hashlib.sha256(json.dumps(parts, default=as_plain).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")
