"""The configuration file: ``loader`` (the Config and its sections, load_config), the typed-setting ``schema``
every section is declared with, the sections of integrations, mail and notifications, and ``keys`` (secrets)."""
