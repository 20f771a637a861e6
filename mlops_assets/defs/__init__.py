"""Dagster wiring only: one module per lifecycle stage, plus automation."""
