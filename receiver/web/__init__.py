"""The HTTP side: the webhook, its authentication, the change feed, probes, request logs, gunicorn
settings."""
