"""Alertmanager alerts as living Slack threads: payload, grouping, persistence, context, buttons."""
