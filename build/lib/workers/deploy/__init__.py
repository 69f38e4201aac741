"""Deploy jobs: clone, build, lease a port, run, check health, report (see pipeline.py)."""
