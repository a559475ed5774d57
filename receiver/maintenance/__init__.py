"""Keeping years of events: monthly partitions made ahead of time, retention, the old table moved.

Nothing here is on the request path. `receiver migrate` and `receiver maintain` call it, and
each web worker keeps partitions for the coming months ready in the background.
"""
