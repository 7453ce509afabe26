"""The services tests and benchmarks use (PostgreSQL, Redis): whether one listens, and cleaning up."""

from __future__ import annotations

import socket


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def flush_redis(host: str, port: int, db: int) -> None:
    """Empty one Redis database (a test's or benchmark's own index) before and after its use."""
    import redis

    client = redis.Redis(host=host, port=port, db=db, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()
