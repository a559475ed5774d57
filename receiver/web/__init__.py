"""The HTTP side: the webhook, its authentication, probes, request logs, gunicorn settings."""
