"""Reports: the figures (``figures``), their schedule in the configuration (``schedule``), and the mailing of
scheduled reports by the timers role (``mailing``)."""
