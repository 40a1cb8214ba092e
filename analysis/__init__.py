"""Looking inside a RagTrace: attention per passage, attribution, variant comparison (analysis issue)."""
