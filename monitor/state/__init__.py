"""State that survives: the checkpoint codec, stores, the partition ledger, the checkpointer."""
