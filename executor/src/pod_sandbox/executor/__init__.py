"""The sandbox pod's HTTP executor service (Bottle on waitress, fork-server children)."""
