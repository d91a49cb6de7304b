"""Prefect @flow definitions: wiring only."""
