"""HTML compatibility report from stage results (results/records.py)."""
