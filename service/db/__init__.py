"""SQL persistence: models, sessions and schema migrations."""
