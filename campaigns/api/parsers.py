"""The API's JSON parser: DRF's, with a bound on how deeply a body may nest.

Python's JSON decoder recurses once per level: a body of a thousand nested arrays raised
RecursionError (a 500 and a logged traceback for one anonymous request), and a few hundred levels
parse but then recurse again through validation and storage. No field of this API nests deeper
than a few levels, so a body deeper than MAX_DEPTH is refused like any malformed body: 400 with a
JSON ``detail``, before any view code runs.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32
TOO_DEEP = f"JSON parse error - the body nests more than {MAX_DEPTH} levels deep."


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when arrays and objects nest more than ``limit`` levels (iterative: no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (list, dict))
        ]
        if not level:
            return False
    return True


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        if depth_exceeds(data):
            raise ParseError(TOO_DEEP)
        return data
