"""The configuration file: ``loader`` (the Config, its sections, load_config), the typed-setting ``schema``
every section is declared with, the sections of integrations, mail and notifications (``*_settings``),
and ``keys`` (secrets from the environment or generated into data_dir)."""
