"""Notifications: the outbox, its delivery through Apprise, templates, who gets what."""
