"""Report pages kept small (``lib/report_assets.py``): shared files, gzipped pages, the viewer."""

from __future__ import annotations

import evidently
import pandas as pd
import pytest

from mlops_assets.lib.report_assets import VIEWER, VIEWER_HTML, read_page, share_assets, store_page


def _page() -> str:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 5})
    data = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=["x"]))
    return Report([DataDriftPreset()]).run(data, data).get_html_str(as_iframe=False)


def test_a_page_links_the_shared_files_instead_of_embedding_them():
    html = _page()
    shared = share_assets(html)
    version = evidently.__version__
    assert sorted(shared.files) == [
        f"assets/evidently-{version}.js",
        f"assets/material-ui-icons-{version}.woff2",
    ]
    assert len(shared.html) < len(html) - 3_000_000  # the 3.5 MB script is gone
    assert f'<script src="../assets/evidently-{version}.js"></script>' in shared.html
    assert f"url(../assets/material-ui-icons-{version}.woff2)" in shared.html
    assert "drawDashboard" in shared.html  # the page still draws its own data
    # Putting the files back gives the embedded page's script and font bytes.
    script = shared.files[f"assets/evidently-{version}.js"].decode()
    assert f"<script>{script}</script>" in html


def test_a_page_of_another_shape_is_kept_whole():
    page = "<html><script>something else</script></html>"
    assert share_assets(page).html == page
    assert share_assets(page).files == {}


def test_a_stored_page_is_gzipped_and_linked_through_the_viewer():
    page = "<!DOCTYPE html><html>" + "<p>drift</p>" * 1000 + "</html>"
    stored = store_page("drift", "2013-02-01", page)
    assert stored.relative == "drift/2013-02-01.html.gz"
    assert stored.viewer == f"drift/{VIEWER}"
    assert stored.address == f"drift/{VIEWER}?report=2013-02-01"
    assert read_page(stored.payload) == page
    assert len(stored.payload) < len(page) / 10
    # No timestamp inside: the same page is the same bytes (a re-run rewrites nothing new).
    assert store_page("drift", "2013-02-01", page).payload == stored.payload
    # The viewer fetches exactly the stored file's name.
    assert stored.viewer_html.decode() == VIEWER_HTML
    assert '+ ".html.gz"' in VIEWER_HTML


@pytest.mark.parametrize("name", ["../assets/x", "a/b", "..", "", ".hidden", "day 1"])
def test_a_name_the_viewer_would_refuse_is_refused(name):
    with pytest.raises(ValueError, match="report name"):
        store_page("drift", name, "<html></html>")
