"""Configuration: the schema, loading, and the per-model plans (with the detector registry)."""
