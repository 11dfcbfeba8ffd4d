"""What operators read: the dashboard, the conversations API, /healthz, /metrics and request logs."""
