"""Report pages kept small: Evidently's script and font stored once, each page gzipped.

A standalone Evidently page embeds the same 3.5 MB script and 126 KB font every day: a year
of drift reports was 1.5 GB, 44 times the data it describes. The page keeps its own data and
loads the two shared files by a relative link, so it opens the same from the report server or
an object-store website; the files are named by Evidently's version, so pages of an older
version keep theirs.

What is left of a page (0.47 MB of plot data a day) is stored gzipped (about 8 times
smaller) and shown by one static viewer page per folder (``view.html?report=<name>``), which
fetches ``<name>.html.gz``, unpacks it in the browser (``DecompressionStream``) and draws it:
any static web server or object-store website serves it, and the link stays one click.
"""

from __future__ import annotations

import base64
import functools
import gzip
import importlib.resources
import re
from dataclasses import dataclass

# Below the reports root; pages sit one folder down (``drift/<day>.html.gz``).
ASSETS_FOLDER = "assets"
# In each folder of pages: shows ``<name>.html.gz`` for ``?report=<name>``.
VIEWER = "view.html"
PAGE_SUFFIX = ".html.gz"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

# Plain JavaScript, no dependency: the name is checked (no other folder can be reached), a
# server that already unpacked the file (Content-Encoding: gzip) is handled by the magic bytes.
VIEWER_HTML = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="UTF-8"><title>Report</title></head>
<body>
<p id="status">Loading the report...</p>
<script>
(async () => {
  const status = document.getElementById("status");
  const name = new URLSearchParams(location.search).get("report") || "";
  if (!/__NAME__/.test(name) || name.includes("..")) {
    status.textContent = "No report named: open this page as view.html?report=<name>.";
    return;
  }
  try {
    const response = await fetch(encodeURIComponent(name) + "__SUFFIX__");
    if (!response.ok) throw new Error(name + "__SUFFIX__: HTTP " + response.status);
    let bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
      const unpacked = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      bytes = new Uint8Array(await new Response(unpacked).arrayBuffer());
    }
    const page = new TextDecoder().decode(bytes);
    document.open();
    document.write(page);
    document.close();
  } catch (error) {
    status.textContent = "The report could not be shown: " + error.message;
  }
})();
</script>
</body>
</html>
""".replace("__SUFFIX__", PAGE_SUFFIX).replace("__NAME__", _NAME.pattern)


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


@dataclass(frozen=True)
class StoredPage:
    """A report page as stored: gzipped, under its folder, with the viewer that shows it.

    Attributes:
        relative: The gzipped page, below the reports root (``drift/<name>.html.gz``).
        payload: The gzipped bytes (no timestamp: the same page gives the same bytes).
        viewer: The viewer page, below the reports root (``drift/view.html``).
        viewer_html: The viewer's bytes.
        address: What a web link to the page is, below the reports root
            (``drift/view.html?report=<name>``).
    """

    relative: str
    payload: bytes
    viewer: str
    viewer_html: bytes
    address: str


def store_page(folder: str, name: str, html: str) -> StoredPage:
    """The gzipped page ``<folder>/<name>.html.gz`` and how the viewer links to it.

    Raises:
        ValueError: if ``name`` is not a plain file name (letters, digits, ``_ . -``), which
            the viewer would refuse.
    """
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"report name {name!r}: use letters, digits, '_', '.' and '-' only")
    return StoredPage(
        relative=f"{folder}/{name}{PAGE_SUFFIX}",
        payload=gzip.compress(html.encode(), compresslevel=9, mtime=0),
        viewer=f"{folder}/{VIEWER}",
        viewer_html=VIEWER_HTML.encode(),
        address=f"{folder}/{VIEWER}?report={name}",
    )


def read_page(payload: bytes) -> str:
    """The page of a stored (gzipped) report, as ``gunzip`` gives it."""
    return gzip.decompress(payload).decode()
