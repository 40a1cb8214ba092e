"""Evaluation: metrics (retrieval now; answer metrics, judge and runner come with the evaluation issue)."""
