"""What others read: the status snapshot, /status, /metrics and the HTTP app."""
