"""The benchmark: schema, chunking, source builders, the shipped processed files and domain registry."""
