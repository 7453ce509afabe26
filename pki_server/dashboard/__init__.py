"""The operator dashboard: pages beyond the Django admin, and the websocket live feed."""
