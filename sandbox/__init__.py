"""Sandbox stand-ins for the systems the bot drives (a fake Kubernetes API server and its seed)."""
