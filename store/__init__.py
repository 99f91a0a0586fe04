"""Storage: peewee models, the database from its URL, schema migrations, queries."""
