"""Measurements of the budgets in docs/benchmarks.md, one module per measure.

Run them as modules from the project root, e.g. ``uv run python -m benchmarks.load_time``;
``benchmarks.common`` holds what they share.
"""
