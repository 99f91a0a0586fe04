"""The pipeline: Inbound -> parse -> Signal(s) -> the step list of its kind of input.

``driver`` runs the steps (the Pipeline, its Context and control signals); ``generic`` holds
the steps every kind of input shares (correlate, classify, allocate, apply); ``mail_steps``
and ``alert_steps`` hold the parser and steps of email and webhook inputs. The step lists
themselves (``EMAIL_STEPS``, ``ALERT_STEPS``) are declared in gateway/service.py.
"""
