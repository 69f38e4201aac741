"""`make bench`: Dockyard measured beside the simplest thing that does the same work.

Run with `.venv/bin/python -m bench [--only NAME]`; see bench/__main__.py for the list of
benches and bench/core.py for what a bench module provides.
"""
