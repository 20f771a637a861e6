"""Resources for every external system, and the one place that picks their flavour."""

from mlops_assets.resources.environments import build_resources

__all__ = ["build_resources"]
