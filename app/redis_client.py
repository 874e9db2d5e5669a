"""The shared Redis client, built once per process with explicit timeouts."""

import redis

from app.config import settings

redis_client: redis.Redis = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=64,
        timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        decode_responses=True,
    )
)
