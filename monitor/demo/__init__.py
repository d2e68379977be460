"""`driftline demo`: the embedded broker and the replayed stream."""
