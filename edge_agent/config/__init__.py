"""Configuration: the YAML reader, the pydantic models, secrets."""
