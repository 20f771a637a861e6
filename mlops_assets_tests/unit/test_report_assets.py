"""Evidently's script and font shared by the report pages (``lib/report_assets.py``)."""

from __future__ import annotations

import evidently
import pandas as pd

from mlops_assets.lib.report_assets import share_assets


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
