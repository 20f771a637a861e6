"""Evidently's script and font kept once beside the reports, not embedded in every page.

A standalone Evidently page embeds the same 3.5 MB script and 126 KB font every day: a year
of drift reports was 1.5 GB, 44 times the data it describes. The page keeps its own data and
loads the two shared files by a relative link, so it opens the same from the report server or
an object-store website; the files are named by Evidently's version, so pages of an older
version keep theirs.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
from dataclasses import dataclass

# Below the reports root; pages sit one folder down (``drift/<day>.html``).
ASSETS_FOLDER = "assets"


@dataclass(frozen=True)
class SharedPage:
    """A report page and the shared files it links to.

    Attributes:
        html: The page, linking to ``files`` instead of embedding them.
        files: Relative path below the reports root -> bytes, written once.
    """

    html: str
    files: dict[str, bytes]


@functools.cache
def _static(name: str) -> bytes:
    """One of Evidently's static files, read once per process (the script is 3.5 MB)."""
    return (importlib.resources.files("evidently") / "nbextension" / "static" / name).read_bytes()


@functools.cache
def _embedded() -> tuple[str, str]:
    """The script and font exactly as a standalone page embeds them."""
    script, font = _static("index.js"), _static("material-ui-icons.woff2")
    return (
        f"<script>{script.decode()}</script>",
        f"url(data:font/ttf;base64,{base64.b64encode(font).decode()})",
    )


def share_assets(html: str, depth: int = 1) -> SharedPage:
    """Moves the embedded script and font out of a standalone Evidently page.

    Args:
        html: A page from ``Snapshot.get_html_str(as_iframe=False)``.
        depth: How many folders below the reports root the page is written.

    Returns:
        The smaller page and the files to write; a page that does not embed exactly these
        files (another Evidently) is returned whole, with no files.
    """
    import evidently

    up = "../" * depth
    script_name = f"{ASSETS_FOLDER}/evidently-{evidently.__version__}.js"
    font_name = f"{ASSETS_FOLDER}/material-ui-icons-{evidently.__version__}.woff2"
    embedded_script, embedded_font = _embedded()
    if html.count(embedded_script) != 1 or html.count(embedded_font) != 1:
        return SharedPage(html, {})
    page = html.replace(embedded_script, f'<script src="{up}{script_name}"></script>')
    page = page.replace(embedded_font, f"url({up}{font_name})")
    files = {script_name: _static("index.js"), font_name: _static("material-ui-icons.woff2")}
    return SharedPage(page, files)
