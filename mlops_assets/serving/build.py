"""Builds and exports the service's Bento from a scoring bundle folder (and a challenger's).

Run as ``python -m mlops_assets.serving.build BUNDLE --labels JSON --export-dir DIR
[--challenger BUNDLE --trial JSON]`` with ``BENTOML_HOME`` pointing at the store. The
``bento`` asset runs it in a child process, so BentoML is never imported by the code location
and each build sees exactly the store it was given. Prints one JSON line: the bento and model
tags (the challenger's or null), the bento's folder and size, and the exported archive.
"""

import argparse
import ast
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mlops_assets import settings

SERVICE = "mlops_assets.serving.service:FlightDelay"
CHALLENGER_NAME = f"{settings.MODEL_NAME}_challenger"
# Bento labels holding the default serving mode of a Bento with a challenger.
TRIAL_MODE_LABEL, TRIAL_SHARE_LABEL = "trial_mode", "trial_share"
CHALLENGER_VERSION_LABEL = "challenger_model_version"


def source_files(module: str, root: Path) -> list[str]:
    """The files of ``module`` and of every module of its package it imports, at any depth.

    Read from the source (nothing is imported): ``import`` and ``from`` statements anywhere in
    a file count, those inside functions too (a lazy import runs while serving as well), and
    so does every package ``__init__.py`` on the way. Other packages are the image's
    requirements (``lib.runtime``), not source.

    Args:
        module: Dotted module name, e.g. ``mlops_assets.serving.service``.
        root: The folder holding the package (the build context).

    Returns:
        Paths relative to ``root``, sorted.
    """
    package = module.split(".")[0]
    files: set[Path] = set()
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        path = _module_file(root, parts)
        if path is None:  # a name defined in a package, not a module of its own
            continue
        files.add(path)
        files.update(f for i in range(1, len(parts)) if (f := _module_file(root, parts[:i])))
        here = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per dot
                    anchor = here[: len(here) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                pending += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        pending = [n for n in pending if n == package or n.startswith(f"{package}.")]
    return sorted(str(f.relative_to(root)) for f in files)


def _module_file(root: Path, parts: list[str]) -> Path | None:
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def trial_labels(challenger: dict[str, str] | None, trial: dict[str, Any] | None) -> dict[str, str]:
    """The Bento labels recording the challenger and its default trial (mode and share).

    Raises:
        ValueError: a trial without a challenger, or an unknown mode or share.
    """
    from mlops_assets.serving.modes import ServingMode

    if challenger is None:
        if trial is not None and trial.get("mode", "off") != "off":
            raise ValueError(f"a {trial['mode']} trial needs a challenger in the Bento")
        return {}
    labels = {CHALLENGER_VERSION_LABEL: str(challenger.get("model_version", ""))}
    if trial is not None:
        checked = ServingMode(str(trial["mode"]), float(trial.get("share", 0.0)))
        labels |= {TRIAL_MODE_LABEL: checked.mode, TRIAL_SHARE_LABEL: repr(checked.share)}
    return labels


def _store_model(name: str, bundle: Path, labels: dict[str, str], role: str) -> Any:
    import bentoml

    model_info = json.loads((bundle / "model.json").read_text())
    with bentoml.models.create(
        name, labels={**labels, "role": role}, metadata=model_info, module="mlops_assets.serving"
    ) as model:
        for item in bundle.iterdir():
            shutil.copy2(item, Path(model.path) / item.name)
    return model


def build(
    bundle: Path,
    labels: dict[str, str],
    export_dir: Path,
    challenger: Path | None = None,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stores the bundle(s) as BentoML models, builds the Bento and exports it.

    Args:
        bundle: Folder written by ``ScoringBundle.save``: the champion.
        labels: Labels for the model and the Bento (model version, MLflow run ...).
        export_dir: Where the exported ``.bento`` archive is written.
        challenger: Folder of the challenger's bundle, stored as ``<model>_challenger``.
        trial: The Bento's default serving mode, ``{"mode": ..., "share": ...}``.

    Returns:
        ``bento_tag``, ``model_tag``, ``challenger_model_tag`` (or None), ``bento_path``,
        ``size_bytes``, ``export_path``.
    """
    if shutil.which("uv") is None:
        raise RuntimeError("building a Bento needs `uv` on PATH (BentoML uses it)")
    import bentoml

    root = settings.project_root()
    challenger_info = json.loads((challenger / "model.json").read_text()) if challenger else None
    bento_labels = {**labels, **trial_labels(challenger_info, trial)}
    model = _store_model(settings.MODEL_NAME, bundle, labels, "champion")
    models: list[Any] = [str(model.tag)]
    # The service resolves exactly these models and trial while building; a served Bento
    # reads them from its own bento.yaml.
    os.environ["MLOPS_BENTO_MODEL"] = str(model.tag)
    os.environ.pop("MLOPS_BENTO_CHALLENGER", None)
    os.environ["MLOPS_BENTO_TRIAL"] = json.dumps(bento_labels)
    challenger_tag = None
    if challenger is not None and challenger_info is not None:
        challenger_labels = {k: str(v) for k, v in challenger_info.items()}
        stored = _store_model(CHALLENGER_NAME, challenger, challenger_labels, "challenger")
        challenger_tag = str(stored.tag)
        models.append(challenger_tag)
        os.environ["MLOPS_BENTO_CHALLENGER"] = challenger_tag
    description = "Flight delay prediction: the champion model behind an HTTP API."
    if challenger_tag:
        description = "Flight delay prediction: the champion and a challenger on trial."
    bento = bentoml.bentos.build(
        SERVICE,
        models=models,
        labels=bento_labels,
        description=description,
        # The bento's source: the service and the project modules it imports.
        include=source_files(SERVICE.partition(":")[0], root),
        build_ctx=str(root),
    )
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / f"{bento.tag.name}-{bento.tag.version}.bento"
    exported = bentoml.bentos.export_bento(bento.tag, str(target))
    folder = Path(bento.path)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "bento_tag": str(bento.tag),
        "model_tag": str(model.tag),
        "challenger_model_tag": challenger_tag,
        "bento_path": str(folder),
        "size_bytes": size,
        "export_path": exported,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: prints the build result as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--labels", default="{}", help="labels as a JSON object")
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--challenger", type=Path, default=None, help="challenger bundle")
    parser.add_argument("--trial", default="null", help='{"mode": ..., "share": ...} or null')
    args = parser.parse_args(argv)
    settings.telemetry_off()
    result = build(
        args.bundle,
        json.loads(args.labels),
        args.export_dir,
        args.challenger,
        json.loads(args.trial),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
