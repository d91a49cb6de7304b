"""Prefect @task wrappers around scintiflow functions: thin, batch-level, PHI-free parameters."""
