"""`driftline replay`: the daemon's pipeline over event files, offline."""
