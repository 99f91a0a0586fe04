"""The ``inlet`` command line (``main``), and the commands that drive a running Inlet from outside: demo, drill."""
