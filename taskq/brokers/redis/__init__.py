"""RedisBroker: taskq on Redis (standalone, Sentinel or Cluster).

See ``docs/redis.md`` for the key schema, the scripts and production settings.
"""

from taskq.brokers.redis.broker import RedisBroker

__all__ = ["LEAST_PRIVILEGE_ACL", "RedisBroker"]

LEAST_PRIVILEGE_ACL = (
    "resetkeys ~taskq:* resetchannels &taskq:cancel -@all"
    " +ping +hello +auth +select +time +command +cluster|slots +info"
    " +eval +evalsha +blpop +publish +subscribe +unsubscribe +memory|usage"
    " +sadd +srem +smembers +smismember +hgetall +zrevrange"
    " +hset +hsetnx +hget +hmget +hdel +hexists +hincrby +hlen +hkeys"
    " +lpush +rpush +rpop +llen +lrem +lrange +lindex +exists +set +del +unlink"
    " +zadd +zrem +zscore +zmscore +zcard +zrange +zrangebyscore +zrangebylex +zrevrangebylex"
    " +zlexcount +zremrangebylex +zremrangebyscore +zremrangebyrank"
)
"""The ACL rules a RedisBroker user needs with the default ``taskq`` key prefix.

Use it as ``ACL SETUSER <user> on ><password> <LEAST_PRIVILEGE_ACL>``: keys
under ``taskq:*`` only, the ``taskq:cancel`` channel only, and only the
commands the broker sends itself or calls from its scripts (Redis checks
both). ``+info`` lets a worker check ``maxmemory_policy`` at start-up
(``CONFIG`` is deliberately not granted). With another prefix, replace
``taskq:`` in the key and channel rules.
"""
