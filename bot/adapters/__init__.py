"""Adapters to the outside world: Kubernetes, Prometheus, Slack, Google Cloud."""
