"""Intake: every way an input arrives (SMTP, IMAP, a mailbox file; webhooks through web/hooks.py) and the one
writer that stores it as an Inbound row before it is acknowledged; what was refused; how an Inbound is shown."""
