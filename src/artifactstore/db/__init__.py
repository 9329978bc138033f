"""Database access: table definitions, engines, migrations and the embedded cluster."""
