"""`make bench`: whole-process measurements of each stage against references on the same files."""
