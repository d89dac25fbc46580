"""Re-export of the embedded server for tests that need their own Redis."""

from broker.embedded_redis import RedisServer, free_port, redis_server_binary

__all__ = ["RedisServer", "free_port", "redis_server_binary"]
