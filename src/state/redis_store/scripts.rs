//! Lua scripts for the operations that must be atomic across replicas.
//!
//! Redis runs a script without interleaving other commands, so two replicas checking the same
//! TOTP step or counting failures of the same account at the same moment cannot both win.
//! Every key a script creates gets a TTL, so Redis never grows without bound.

use ::redis::Script;

/// Loaded once per store; `redis::Script` sends EVALSHA and falls back to EVAL.
#[derive(Debug)]
pub(super) struct Scripts {
    /// KEYS[1] = totp key; ARGV = step, ttl seconds → 1 if the step is newer than any spent.
    pub(super) use_totp_step: Script,
    /// KEYS[1] = failures hash; ARGV = now, free, base, max, hard, memory seconds
    /// → {count, locked_until}.
    pub(super) add_failure: Script,
    /// KEYS[1] = window key; ARGV = window ms → {hits, ms left}.
    pub(super) hit_rate_limit: Script,
    /// KEYS[1] = session hash; ARGV = field, value → 1 if the session exists.
    pub(super) set_if_exists: Script,
    /// KEYS[1] = user's session set; ARGV = session key prefix → number revoked.
    pub(super) revoke_user: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            use_totp_step: Script::new(
                r"
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local step = tonumber(ARGV[1])
if last >= step then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1",
            ),
            add_failure: Script::new(
                r"
local now, free, base, max, hard, memory =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('EXPIRE', KEYS[1], memory)
local lock = 0
if count >= hard then
  lock = 86400
elseif count >= free then
  local doublings = math.min(count - free, 20)
  lock = math.min(base * (2 ^ doublings), max)
end
local locked_until = tonumber(redis.call('HGET', KEYS[1], 'locked_until') or '0')
if lock > 0 then
  locked_until = now + math.floor(lock)
  redis.call('HSET', KEYS[1], 'locked_until', locked_until)
end
return {count, locked_until}",
            ),
            hit_rate_limit: Script::new(
                r"
local hits = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {hits, left}",
            ),
            set_if_exists: Script::new(
                r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1",
            ),
            revoke_user: Script::new(
                r"
local ids = redis.call('SMEMBERS', KEYS[1])
local revoked = 0
for _, id in ipairs(ids) do
  revoked = revoked + redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return revoked",
            ),
        }
    }
}
