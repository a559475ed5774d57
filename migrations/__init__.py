"""Numbered plain-SQL migrations; packaged as `receiver.migrations` (see setup.cfg)."""
