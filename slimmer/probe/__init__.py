"""`--probe`: run the workload once in a sandbox and keep what it really touched (probe.py)."""
