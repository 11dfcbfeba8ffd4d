"""What operators read: the dashboard (its templates/ and static/), the conversations API, /healthz, /metrics
and request logs."""
