"""Request ids: the client's X-Request-ID when it is a sane token, else a new one."""
from __future__ import annotations

import re
import uuid

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(incoming: str | None) -> str:
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex
