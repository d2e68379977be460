"""The daemon: composition root, supervisor, batch loop, partition ownership, the CLI."""
