"""What operators read: Prometheus metrics, the HTTP server, systemd notify, ``status`` and ``doctor``."""
