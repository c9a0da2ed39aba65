"""The core of the AIA runbook bot: settings, procedures, store and adapters.

Nothing in this package imports :mod:`handlers` (enforced by import-linter):
the core must stay usable from the Slack app, the console and the tests alike.
"""
