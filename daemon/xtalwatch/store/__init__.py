"""The catalogue: every image, label, prediction and event, in SQLite, behind named queries."""
