"""Where monitoring reports (Evidently HTML and JSON) are written, and where they are served."""

from typing import Any

import dagster as dg


class ReportStore(dg.ConfigurableResource):
    """A folder or object-store prefix for report files.

    Attributes:
        base_url: Local folder or URL (``s3://bucket/reports``).
        public_url: Base URL under which a web server serves ``base_url`` (locally
            ``make reports`` serves it on 127.0.0.1); empty = no links, paths only.
        storage_options: JSON object of fsspec options.
    """

    base_url: str
    public_url: str = ""
    storage_options: str = "{}"

    def write(self, relative: str, payload: bytes) -> str:
        """Writes ``payload`` to ``<base_url>/<relative>`` atomically; returns its location."""
        from mlops_assets.lib.storage import location, write_atomic

        target = location(self.base_url, self.storage_options) / relative
        write_atomic(target, payload)
        return str(target)

    def write_missing(self, files: dict[str, bytes]) -> None:
        """Writes each file that is not there yet (shared files, the same bytes for every run)."""
        from mlops_assets.lib.storage import location, write_atomic

        root = location(self.base_url, self.storage_options)
        for relative, payload in files.items():
            if not (root / relative).exists():
                write_atomic(root / relative, payload)

    def link(self, relative: str) -> str | None:
        """The web address of a report, when a public URL is configured."""
        return f"{self.public_url.rstrip('/')}/{relative}" if self.public_url else None

    def read(self, relative: str) -> Any:
        """The bytes of a stored report."""
        from mlops_assets.lib.storage import location

        return (location(self.base_url, self.storage_options) / relative).read_bytes()
