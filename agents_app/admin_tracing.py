"""Admin for local traces, prices and usage review. Imported by admin.py."""
