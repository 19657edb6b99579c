"""Sources that are not a user's folder of files: each one writes what it fetched as the file the
ingest pipeline reads, so every source goes through the same validation and quarantine."""
