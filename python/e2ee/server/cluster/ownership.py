"""The owner keys of sessions and the three Lua scripts that change them.

``owner:<session>`` holds the id of the one node whose router carries the session's media.
Every change goes through a script, which Redis runs alone (no other command interleaves,
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/), so two nodes
can never both own a session:

* claim: "if the owner exists and ``node:<owner>`` exists (it is live), return the owner;
  else, if the chosen node is live, make it the owner and return it" (the first join
  places the session; a dead owner's sessions go to the next claimer);
* refresh (the owner's heartbeat, many sessions at once): "set if absent or mine, else
  return the other owner": after a Redis restart that lost the keys the owner re-asserts;
  if another node has claimed meanwhile, the heartbeat learns it lost the session;
* release: "delete if mine".

Shared by :mod:`~e2ee.server.cluster.registry` (refresh) and
:mod:`~e2ee.server.cluster.placement` (claim, release).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["claim_script", "refresh_script", "release_script"]

# KEYS: owner:<session>.  ARGV: prefix, chosen node id, ttl ms.
# Returns the owner (the live one found, or the chosen one) or false if chosen is not live.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[1] .. 'node:' .. cur) == 1 then
  return cur
end
if redis.call('EXISTS', ARGV[1] .. 'node:' .. ARGV[2]) == 0 then
  return false
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
"""

# KEYS: owner keys.  ARGV: my node id, ttl ms.
# Returns, per key, '' where it is (now) mine, else the other owner's id.
_REFRESH = """
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if (not cur) or cur == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = ''
  else
    out[i] = cur
  end
end
return out
"""

# KEYS: owner:<session>.  ARGV: my node id.  Returns 1 if deleted.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def claim_script(redis: Redis) -> AsyncScript:
    return redis.register_script(_CLAIM)


def refresh_script(redis: Redis) -> AsyncScript:
    return redis.register_script(_REFRESH)


def release_script(redis: Redis) -> AsyncScript:
    return redis.register_script(_RELEASE)
