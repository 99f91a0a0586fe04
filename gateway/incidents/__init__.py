"""Incidents: the lifecycle (the one door for every change), SLA arithmetic, escalation,
procedures and the timers that fire their steps."""
