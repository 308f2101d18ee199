"""Project-owned Relax passes, one per file, each named for what it rewrites; listed in lib/pipeline.py."""
