"""Writes of the realtime app: system notices to every connected client."""

from __future__ import annotations

import json

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from campaigns.payloads import isoformat
from eventlog import layer
from realtime.fanout import BROADCAST_GROUP
from realtime.models import SystemNotice


@transaction.atomic
def notice_send(*, level: str, message: str, sent_by: AbstractBaseUser | None) -> SystemNotice:
    notice = SystemNotice(level=level, message=message.strip(), sent_by=sent_by)
    notice.full_clean()
    notice.save()
    transaction.on_commit(lambda: notice_broadcast(notice))
    return notice


def notice_broadcast(notice: SystemNotice) -> None:
    frame = {
        "type": "system.notice",
        "level": notice.level,
        "message": notice.message,
        "emitted_at": isoformat(notice.sent_at),
    }
    layer.group_send(BROADCAST_GROUP, {"type": "system.notice", "frame": json.dumps(frame, separators=(",", ":"))})
