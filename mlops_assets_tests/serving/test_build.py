"""The bento's source is derived from the service's imports, so a new import cannot be missed."""

from __future__ import annotations

from pathlib import Path

from mlops_assets import settings
from mlops_assets.serving.build import SERVICE, source_files

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/app.py": "import os\nfrom pkg.sub import helper\n\ndef later():\n    from . import lazy\n",
    "pkg/sub/__init__.py": "",
    "pkg/sub/helper.py": "import json\nimport pkg.deep.leaf\nfrom ..names import NAME\n",
    "pkg/deep/__init__.py": "from pkg.deep import leaf\n",
    "pkg/deep/leaf.py": "",
    "pkg/names.py": "NAME = 1\n",
    "pkg/lazy.py": "",
    "pkg/unused.py": "import pkg.app\n",
}


def test_imports_are_followed_at_any_depth_lazy_and_relative_ones_too(tmp_path: Path):
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert source_files("pkg.app", tmp_path) == sorted(set(PACKAGE) - {"pkg/unused.py"})


def test_the_service_ships_what_it_imports_and_nothing_of_the_code_location():
    files = source_files(SERVICE.partition(":")[0], settings.project_root())
    assert {
        "mlops_assets/__init__.py",
        "mlops_assets/settings.py",
        "mlops_assets/serving/__init__.py",
        "mlops_assets/serving/service.py",
        "mlops_assets/serving/guard.py",
        "mlops_assets/lib/__init__.py",
        "mlops_assets/lib/scoring.py",
        "mlops_assets/lib/modeling.py",
        "mlops_assets/lib/estimator.py",
        "mlops_assets/lib/runtime.py",
    } <= set(files)
    assert all((settings.project_root() / f).is_file() for f in files)
    # The service never loads Dagster wiring, and MLflow is not in its image.
    assert not [f for f in files if f.startswith(("mlops_assets/defs/", "mlops_assets/resources/"))]
    assert "mlops_assets/definitions.py" not in files
    assert "mlops_assets/lib/pyfunc.py" not in files
