"""A generated project pulls later template changes with `copier update`: a normal merge."""

from __future__ import annotations

from pathlib import Path

from mlops_assets_tests.template.template import commit_all, git, render, snapshot

CONTRACTS = "lib/contracts.py"
LINE = "MAX_MISSING_TAILNUM_SHARE = 0.5"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def test_update_merges_template_changes_and_marks_conflicts(tmp_path: Path) -> None:
    from copier import run_update

    template = snapshot(tmp_path / "template", tag="v1.0.0")
    project = render(template, tmp_path / "fraud-platform", ref="v1.0.0")
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "start from the template")

    # The team's changes: one line the template will change too, one of their own, a new module.
    _replace(project / "fraud_assets" / CONTRACTS, LINE, "MAX_MISSING_TAILNUM_SHARE = 0.3")
    _replace(project / "README.md", "# fraud_assets\n", "# fraud-platform\n")
    own = project / "fraud_assets" / "lib" / "fraud_rules.py"
    own.write_text('"""Our own rules."""\n')
    commit_all(project, "team changes")

    # The next template release changes the same line, another file, and adds a module.
    _replace(template / "mlops_assets" / CONTRACTS, LINE, "MAX_MISSING_TAILNUM_SHARE = 0.4")
    _replace(
        template / "mlops_assets" / "lib" / "drift.py",
        "PREDICTION_COLUMN = ",
        "# The model's output column in the reference and the current data.\nPREDICTION_COLUMN = ",
    )
    (template / "mlops_assets" / "lib" / "calendar.py").write_text(
        '"""Business days."""\n\nfrom mlops_assets.settings import PARTITION_START\n'
    )
    (template / "deploy" / "helm" / "values.yaml").write_text("# changed upstream\n")
    commit_all(template, "template release 2", tag="v2.0.0")

    run_update(
        str(project),
        vcs_ref="v2.0.0",
        defaults=True,
        overwrite=True,
        unsafe=True,
        quiet=True,
        conflict="inline",
    )

    contracts = (project / "fraud_assets" / CONTRACTS).read_text()
    conflict = contracts[contracts.index("<<<<<<<") : contracts.index(">>>>>>>")]
    assert "MAX_MISSING_TAILNUM_SHARE = 0.3" in conflict  # ours
    assert "MAX_MISSING_TAILNUM_SHARE = 0.4" in conflict  # the template's
    assert "=======" in conflict
    # Clean merges: the template's other changes arrive renamed, the team's stay.
    assert "# The model's output column" in (project / "fraud_assets/lib/drift.py").read_text()
    assert (
        "from fraud_assets.settings import PARTITION_START"
        in (project / "fraud_assets" / "lib" / "calendar.py").read_text()
    )
    assert (project / "README.md").read_text().startswith("# fraud-platform")
    assert own.read_text() == '"""Our own rules."""\n'
    assert not (project / "deploy" / "helm").exists()  # still not chosen
    assert not (project / "mlops_assets").exists()
    assert "_commit: v2.0.0" in (project / ".copier-answers.yml").read_text()
    # The update is an ordinary change in the working tree, reviewed and committed as usual.
    status = git(project, "status", "--porcelain")
    assert "UU fraud_assets/lib/contracts.py" in status  # a git conflict, as in a merge
    assert "?? fraud_assets/lib/calendar.py" in status
