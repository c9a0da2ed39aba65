"""Escalation paging: policy, durable timers, paging channels.

The database rows are the truth: each escalation and its next due step is a row,
and firing a step is a compare-and-set on that row, so replicas, retried jobs and
restarted processes can never page the same step twice (no state lives only in memory).
"""
