"""One router per resource: search, catalogue items (and bulk indexing), jobs, operations."""
