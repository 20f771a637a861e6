"""Where the audit trail lives: a folder of the state locally, object storage in production."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

AUDIT_URL_VAR = "MLOPS_AUDIT_URL"


class AuditTrail(dg.ConfigurableResource):
    """The hash-chained audit trail (``lib/audit.py``) at a folder or object-store prefix.

    Attributes:
        url: Local folder or URL (``s3://bucket/audit``).
        storage_options: JSON object of fsspec options.
    """

    url: str
    storage_options: str = "{}"

    def root(self) -> Any:
        """The trail's ``UPath``."""
        from mlops_assets.lib.storage import location

        return location(self.url, self.storage_options)

    def record(
        self,
        act: str,
        actor: str,
        subject: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> Any:
        """Appends one record (``lib.audit.append``) and returns it."""
        from mlops_assets.lib import audit

        return audit.append(self.root(), act, actor, subject, reason, evidence)

    def records(self) -> list[Any]:
        """Every record, in order."""
        from mlops_assets.lib import audit

        return audit.read(self.root())

    def verify(self) -> Any:
        """Checks the chain (``lib.audit.verify``)."""
        from mlops_assets.lib import audit

        return audit.verify(self.root())

    def verify_since(self, seq: int, head: str) -> Any:
        """Checks what follows record ``seq`` seen with hash ``head`` (``lib.audit``)."""
        from mlops_assets.lib import audit

        return audit.verify_since(self.root(), seq, head)

    def tail(self) -> tuple[int, str]:
        """The last record's number and hash; raises ``AuditError`` if it cannot be read."""
        from mlops_assets.lib import audit

        return audit.tail(self.root())
