"""The one wire shape of each object, shared by REST answers, events and snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from campaigns.models import Artifact, ComplianceAudit

# Microseconds always present and UTC spelled "Z": 2026-11-22T03:40:00.123456Z
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def isoformat(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime(DATETIME_FORMAT)


def artifact_payload(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": artifact.public_id,
        "campaign_id": artifact.campaign.public_id,
        "run_id": artifact.run.public_id,
        "type": artifact.type,
        "content": artifact.content,
        "metadata": artifact.metadata,
        "created_at": isoformat(artifact.created_at),
        "agent_name": artifact.agent_name,
        "version": artifact.version,
    }


def audit_payload(audit: ComplianceAudit) -> dict[str, Any]:
    """The ``compliance.completed`` event data and the snapshot's ``compliance``."""
    return {
        "is_compliant": audit.is_compliant,
        "compliance_score": audit.score,
        "issues": audit.issues,
        "feedback": audit.feedback,
        "audited_at": isoformat(audit.audited_at),
    }
