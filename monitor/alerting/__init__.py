"""Alerts: the episode state machine, the policy, the alert type."""
