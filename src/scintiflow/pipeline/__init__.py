"""The night's steps without Prefect: shards, merge, drift, the plain loop."""
