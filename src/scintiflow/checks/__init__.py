"""Data checks: the checks table, the Great Expectations suite, quarantine."""
