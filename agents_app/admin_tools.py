"""Admin for the seed agents' data (knowledge base, tickets, demo orders). Imported by admin.py."""
