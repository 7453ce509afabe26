"""Django's PostgreSQL backend with health checks that cost a round trip at most every few seconds."""
