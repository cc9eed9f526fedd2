//! Shared limits: the GCRA of `gcra.rs` run as one atomic Lua script in Redis, so every
//! replica behind the same Redis draws on one budget per tenant.
//!
//! The script checks every key it is given and commits all of them or none (a request
//! that passes its per-second limit but not its per-minute one takes from neither). Time
//! comes from Redis (`TIME`), so replicas' clocks need not agree. Every round trip is
//! bounded by `limits.redis_timeout`; when Redis cannot answer, the caller decides with
//! its local limits instead (counted in `sluice_ratelimit_fallbacks_total`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::Window;

/// KEYS: one per budget. ARGV: per key `interval_us, tolerance_us, n`, then `forced`
/// (1: charge whatever the budget holds). Returns `ok` and per key `ahead_us, wait_us`
/// (the TAT's distance from now after the decision, and for a refused key how long until
/// it would pass; -1 when it passes).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local forced = tonumber(ARGV[#ARGV])
local ok = 1
local tats, nexts, waits = {}, {}, {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local nxt = tat + n * interval
  if nxt < now then nxt = now end
  tats[i], nexts[i], waits[i] = tat, nxt, -1
  if forced == 0 and nxt - now > tolerance then
    ok = 0
    waits[i] = nxt - now - tolerance
  end
end
local out = {ok}
for i, key in ipairs(KEYS) do
  local final = tats[i]
  if ok == 1 then
    final = nexts[i]
    if final > now then
      redis.call('SET', key, final, 'PX', math.floor((final - now) / 1000) + 1)
    else
      redis.call('DEL', key)
    end
  end
  out[#out + 1] = final - now
  out[#out + 1] = waits[i]
end
return out
";

/// One budget as the script sees it.
#[derive(Debug, Clone)]
pub struct Budget {
    pub key: String,
    pub limit: u32,
    pub interval: Duration,
    pub tolerance: Duration,
}

/// The decision of one script run, per budget in the order given.
#[derive(Debug, Clone)]
pub struct Decision {
    pub admitted: bool,
    pub windows: Vec<Window>,
    /// The longest wait of a refused budget.
    pub retry_after: Duration,
}

/// The connection to the shared Redis, made in the background.
pub struct Shared {
    conn: Arc<OnceLock<ConnectionManager>>,
    script: ::redis::Script,
    timeout: Duration,
}

impl Shared {
    /// Fails only on a malformed URL or outside the tokio runtime; Redis being down is
    /// not an error (decisions fall back to local limits until it answers).
    pub fn new(
        url: &str,
        root_ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, String> {
        // The cache's client: `rediss://` and `cache.redis_ca` work here too.
        let client = crate::pipeline::cache::redis::client(url, root_ca)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "shared limits must be set up inside the tokio runtime".to_string())?;
        let conn = Arc::new(OnceLock::new());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let slot = Arc::downgrade(&conn);
        runtime.spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if slot.strong_count() == 0 {
                    return;
                }
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        if let Some(slot) = slot.upgrade() {
                            let _ = slot.set(manager);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "shared limits: cannot reach redis yet; deciding locally");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(Shared {
            conn,
            script: ::redis::Script::new(SCRIPT),
            timeout,
        })
    }

    /// Run the script over `budgets`, taking `n[i]` units of each (all or none unless
    /// `forced`). `None` when Redis did not answer in time (decide locally).
    pub async fn decide(&self, budgets: &[(&Budget, i64)], forced: bool) -> Option<Decision> {
        let mut conn = self.conn.get()?.clone();
        let mut invocation = self.script.prepare_invoke();
        for (budget, n) in budgets {
            invocation
                .key(&budget.key)
                .arg(micros(budget.interval))
                .arg(micros(budget.tolerance))
                .arg(*n);
        }
        invocation.arg(i64::from(forced));
        let reply =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut conn))
                .await;
        let values = match reply {
            Ok(Ok(values)) if values.len() == 1 + 2 * budgets.len() => values,
            Ok(Ok(_)) => {
                tracing::warn!("shared limits: unexpected script reply; deciding locally");
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared limits: redis error; deciding locally");
                return None;
            }
            Err(_) => return None,
        };
        let mut retry_after = Duration::ZERO;
        let windows = budgets
            .iter()
            .enumerate()
            .map(|(i, (budget, _))| {
                let ahead = from_micros(values[1 + 2 * i]);
                let wait = values[2 + 2 * i];
                if wait >= 0 {
                    retry_after = retry_after.max(from_micros(wait));
                }
                Window::at(budget.limit, budget.interval, ahead)
            })
            .collect();
        Some(Decision {
            admitted: values[0] == 1,
            windows,
            retry_after,
        })
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

fn from_micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}
