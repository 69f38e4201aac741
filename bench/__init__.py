"""`make bench`: Dockyard measured beside the simplest thing that does the same work."""
