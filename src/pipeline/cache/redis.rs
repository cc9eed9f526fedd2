//! The cache stage's optional shared second level: Redis, behind this replica's local
//! store (pipeline/cache/store.rs). A miss in memory asks here; a finished generation is
//! written to both. Replicas behind one Redis share their answers.
//!
//! Redis is never on the critical path: it connects in the background, every round trip
//! is bounded by `timeout`, and a failure opens a short cooldown during which lookups miss
//! at once (one request probes when it ends). Down, slow or wrong, it costs misses, never
//! errors or stalls. Values can be sealed with AES-256-GCM, bound to their Redis key.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine as _;

/// Counters the L2 reports into (the caller passes children of its metric vecs).
#[derive(Clone)]
pub struct RedisMetrics {
    pub errors: prometheus::IntCounter, // every failed Redis command or connection attempt
    pub hits: prometheus::IntCounter,
    pub misses: prometheus::IntCounter,
}

/// After a failed round trip, lookups skip Redis this long; then one request probes.
const COOLDOWN: Duration = Duration::from_millis(500);
/// At most one warning per this interval; the errors counter sees every failure.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Back-off between attempts to make the first connection.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The shared second cache level. Cheap to share behind an `Arc`.
pub struct RedisCache {
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once by the background task when the first connection succeeds; the manager
    /// reconnects by itself after that.
    conn: OnceLock<ConnectionManager>,
    cipher: Option<Aes256Gcm>,
    timeout: Duration,
    prefix: String,
    metrics: RedisMetrics,
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is skipped; 0 = healthy.
    down_until_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last warning; `u64::MAX` = none yet.
    last_warn_ms: AtomicU64,
}

impl RedisCache {
    /// Never fails because Redis is down: connects in the background (redis::aio::ConnectionManager,
    /// retried with backoff) and answers misses until it is up. Fails only on a malformed URL,
    /// an unreadable `root_ca`, or when called outside the tokio runtime.
    /// `rediss://` URLs speak TLS (rustls); `root_ca` (PEM) replaces the system's trust
    /// store for them.
    /// `encryption_key`: 32 bytes → values are sealed with AES-256-GCM (random 96-bit nonce per
    /// value, stored as nonce || ciphertext, the cache key as associated data so a value cannot be
    /// replayed under another key — the whole Redis key, prefix included); None → stored as is.
    /// `timeout`: bound on every Redis round trip (e.g. 50 ms): a slow or dead Redis must never
    /// stall a request longer than that.
    pub fn new(
        url: &str,
        encryption_key: Option<[u8; 32]>,
        timeout: Duration,
        prefix: String,
        metrics: RedisMetrics,
        root_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let client = client(url, root_ca)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the redis cache must be created inside the tokio runtime".to_string())?;
        let shared = Arc::new(Shared {
            conn: OnceLock::new(),
            cipher: encryption_key.map(|key| Aes256Gcm::new(&key.into())),
            timeout,
            prefix,
            metrics,
            epoch: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(u64::MAX),
        });
        // No retries inside the manager: after a failure the next probe (see COOLDOWN)
        // starts a fresh reconnection in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        runtime.spawn(connect(Arc::downgrade(&shared), client, config));
        Ok(RedisCache { shared })
    }

    /// The value stored under `key`, or None (miss, Redis down, timeout, undecryptable value —
    /// the last three count an error and log a rate-limited warning, at most one per 10 s).
    pub async fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let s = &*self.shared;
        let mut conn = s.connection()?;
        let redis_key = s.redis_key(key);
        let mut command = ::redis::cmd("GET");
        command.arg(&redis_key);
        let reply =
            tokio::time::timeout(s.timeout, command.query_async::<Option<Vec<u8>>>(&mut conn));
        let stored = match s.outcome("GET", reply.await)? {
            Some(stored) => stored,
            None => {
                s.metrics.misses.inc();
                return None;
            }
        };
        let Some(cipher) = &s.cipher else {
            s.metrics.hits.inc();
            return Some(stored);
        };
        match open(cipher, redis_key.as_bytes(), &stored) {
            Some(value) => {
                s.metrics.hits.inc();
                Some(value)
            }
            None => {
                s.metrics.errors.inc();
                s.warn(
                    "a stored value does not decrypt (other key or tampered); treated as a miss",
                    &"authentication failed",
                );
                None
            }
        }
    }

    /// Store with a TTL (PX, milliseconds). Errors are counted and swallowed.
    pub async fn set(&self, key: &[u8; 32], value: &[u8], ttl: Duration) {
        let s = &*self.shared;
        let ttl_ms = millis(ttl);
        if ttl_ms == 0 {
            return;
        }
        // Before sealing: no work while Redis is down.
        let Some(mut conn) = s.connection() else {
            return;
        };
        let redis_key = s.redis_key(key);
        let sealed;
        let stored = match &s.cipher {
            None => value,
            Some(cipher) => match seal(cipher, redis_key.as_bytes(), value) {
                Ok(bytes) => {
                    sealed = bytes;
                    &sealed[..]
                }
                Err(error) => {
                    s.metrics.errors.inc();
                    s.warn("could not seal a value; not stored", &error);
                    return;
                }
            },
        };
        let mut command = ::redis::cmd("SET");
        command.arg(&redis_key).arg(stored).arg("PX").arg(ttl_ms);
        let reply = tokio::time::timeout(s.timeout, command.query_async::<()>(&mut conn));
        let _ = s.outcome("SET", reply.await);
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.shared.prefix)
            .field("encrypted", &self.shared.cipher.is_some())
            .field("connected", &self.shared.conn.get().is_some())
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A connection to use now, or None (counted as an error) while Redis is down.
    fn connection(&self) -> Option<ConnectionManager> {
        let conn = self.conn.get().filter(|_| self.admit()).cloned();
        if conn.is_none() {
            self.metrics.errors.inc();
            self.warn(
                "redis is unavailable; the shared cache level misses",
                &"not connected",
            );
        }
        conn
    }

    /// False during the cooldown after a failure; when it ends, true for exactly one caller.
    fn admit(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .down_until_ms
                .compare_exchange(
                    until,
                    now.saturating_add(millis(COOLDOWN)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// The reply of a bounded round trip, or None after counting the failure.
    fn outcome<T>(
        &self,
        command: &str,
        reply: Result<::redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let error = match reply {
            Ok(Ok(value)) => {
                if self.down_until_ms.load(Ordering::Relaxed) != 0 {
                    self.down_until_ms.store(0, Ordering::Release);
                }
                return Some(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.down_until_ms.store(
            self.now_ms().saturating_add(millis(COOLDOWN)),
            Ordering::Release,
        );
        self.metrics.errors.inc();
        tracing::debug!(command, error = %error, "redis cache command failed");
        self.warn(
            "a redis command failed; the shared cache level misses for now",
            &error,
        );
        None
    }

    /// Log a warning unless one was logged within `WARN_EVERY`.
    fn warn(&self, what: &str, error: &dyn fmt::Display) {
        let now = self.now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < millis(WARN_EVERY) {
            return;
        }
        if self
            .last_warn_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(error = %error, "redis cache: {what} (next warning in 10 s at the earliest)");
        }
    }

    fn redis_key(&self, key: &[u8; 32]) -> String {
        let mut text = String::with_capacity(self.prefix.len() + 64);
        text.push_str(&self.prefix);
        text.push_str(&hex::encode(key));
        text
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The Redis client for `url`; with `root_ca`, a TLS client trusting only that CA.
pub(crate) fn client(
    url: &str,
    root_ca: Option<&std::path::Path>,
) -> Result<::redis::Client, String> {
    if url.starts_with("rediss://") {
        // rustls needs one process-wide crypto provider; sluice builds only ring (an
        // error here means one is installed already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // The error texts of the redis crate never echo the URL, which may hold a password.
    match root_ca {
        None => ::redis::Client::open(url).map_err(|e| format!("redis url: {e}")),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|e| format!("cache.redis_ca: cannot read {}: {e}", path.display()))?;
            let certificates = ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            ::redis::Client::build_with_tls(url, certificates)
                .map_err(|e| format!("redis url with cache.redis_ca: {e}"))
        }
    }
}

/// Make the first connection, retrying with back-off while the cache exists.
async fn connect(shared: Weak<Shared>, client: ::redis::Client, config: ConnectionManagerConfig) {
    let (mut backoff, max_backoff) = CONNECT_BACKOFF;
    loop {
        let attempt = ConnectionManager::new_with_config(client.clone(), config.clone()).await;
        let Some(shared) = shared.upgrade() else {
            return; // the cache is gone
        };
        match attempt {
            Ok(manager) => {
                let _ = shared.conn.set(manager);
                tracing::info!(prefix = %shared.prefix, "redis cache connected");
                return;
            }
            Err(error) => {
                shared.metrics.errors.inc();
                shared.warn(
                    "cannot connect to redis yet; retrying in the background",
                    &error,
                );
            }
        }
        drop(shared);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// `nonce || ciphertext+tag`, with `aad` authenticated alongside.
fn seal(cipher: &Aes256Gcm, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, String> {
    let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|e| format!("random nonce: {e}"))?;
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: value, aad })
        .map_err(|_| "encryption failed".to_string())?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The plaintext of a `seal`ed value, or None if it was sealed under another key or
/// `aad`, or altered.
fn open(cipher: &Aes256Gcm, aad: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
    if stored.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, sealed) = stored.split_at(NONCE_LEN);
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce).ok()?;
    cipher.decrypt(&nonce, Payload { msg: sealed, aad }).ok()
}

/// The cache encryption key from config text: 64 hex characters, or standard base64 of
/// 32 bytes (`openssl rand -base64 32`). The error never repeats the text.
pub fn parse_encryption_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let mut key = [0u8; 32];
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode_to_slice(text, &mut key).map_err(|e| format!("encryption key: {e}"))?;
        return Ok(key);
    }
    const EXPECTED: &str =
        "64 hex characters or standard base64 of 32 bytes (e.g. `openssl rand -base64 32`)";
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) if bytes.len() == key.len() => {
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Ok(bytes) => Err(format!(
            "encryption key must be {EXPECTED}; this base64 decodes to {} bytes",
            bytes.len()
        )),
        Err(_) => Err(format!(
            "encryption key must be {EXPECTED}; got {} characters that are neither",
            text.len()
        )),
    }
}

/// The redis-server helper of the integration tests (std only), shared with them.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/common/redis.rs"]
mod test_server;

#[cfg(test)]
mod tests {
    use super::test_server::{free_port, url_for_port, RedisServer};
    use super::*;
    use prometheus::IntCounter;
    use std::future::Future;

    const KEY: [u8; 32] = [7; 32];
    const TIMEOUT: Duration = Duration::from_millis(100);
    /// How long a call may take against a dead or frozen Redis: the timeout plus slack
    /// for a shared, loaded machine (a hang would take seconds, or forever).
    const BOUND: Duration = Duration::from_millis(500);

    fn metrics() -> RedisMetrics {
        let counter = |name: &str| IntCounter::new(name, name).expect("valid metric");
        RedisMetrics {
            errors: counter("errors"),
            hits: counter("hits"),
            misses: counter("misses"),
        }
    }

    fn cache(url: &str, key: Option<[u8; 32]>) -> (RedisCache, RedisMetrics) {
        let m = metrics();
        let cache = RedisCache::new(url, key, TIMEOUT, "sluice:test:".into(), m.clone(), None)
            .expect("valid url");
        (cache, m)
    }

    fn cipher(key: [u8; 32]) -> Aes256Gcm {
        Aes256Gcm::new(&key.into())
    }

    /// Poll `check` until it holds, for at most `within`.
    async fn eventually<F: Future<Output = bool>>(
        within: Duration,
        mut check: impl FnMut() -> F,
    ) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// True once a value written now reads back (the cache is connected and healthy).
    async fn round_trips(cache: &RedisCache, n: u8) -> bool {
        let key = [n; 32];
        cache.set(&key, b"probe", Duration::from_secs(10)).await;
        cache.get(&key).await.as_deref() == Some(&b"probe"[..])
    }

    async fn raw_get(url: &str, key: &str) -> Option<Vec<u8>> {
        let client = ::redis::Client::open(url).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_aad_only() {
        let c = cipher(KEY);
        let sealed = seal(&c, b"k1", b"the answer").expect("seal");
        assert_eq!(sealed.len(), NONCE_LEN + b"the answer".len() + TAG_LEN);
        assert_eq!(
            open(&c, b"k1", &sealed).as_deref(),
            Some(&b"the answer"[..])
        );
        assert_ne!(
            seal(&c, b"k1", b"the answer").expect("seal"),
            sealed,
            "fresh nonce per value"
        );
        assert_eq!(open(&cipher([8; 32]), b"k1", &sealed), None, "wrong key");
        assert_eq!(open(&c, b"k2", &sealed), None, "moved to another cache key");
        assert_eq!(
            open(&c, b"k1", &sealed[..NONCE_LEN + TAG_LEN - 1]),
            None,
            "truncated"
        );
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert_eq!(open(&c, b"k1", &tampered), None, "byte {i} flipped");
        }
    }

    #[test]
    fn encryption_keys_parse_from_hex_or_base64() {
        let hex_text = "00ff".repeat(16);
        let key = parse_encryption_key(&format!(" {}\n", hex_text.to_uppercase())).expect("hex");
        assert_eq!((key[0], key[1], key[31]), (0x00, 0xff, 0xff));
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(parse_encryption_key(&b64), Ok([9u8; 32]));
        for bad in [
            "",
            "00ff",
            &"0".repeat(63),
            &"g".repeat(64),
            "c2hvcnQ=",
            &b64[..43],
        ] {
            let error = parse_encryption_key(bad).expect_err(bad);
            assert!(error.contains("64 hex characters"), "{error}");
        }
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(parse_encryption_key(&short)
            .is_err_and(|e| e.contains("16 bytes") && !e.contains(&short)));
    }

    #[tokio::test]
    async fn redis_keys_are_the_prefix_and_lowercase_hex() {
        let (cache, _) = cache("redis://127.0.0.1:1/", None);
        let key = cache.shared.redis_key(&[0xab; 32]);
        assert_eq!(key, format!("sluice:test:{}", "ab".repeat(32)));
    }

    #[test]
    fn bad_urls_and_a_missing_runtime_are_errors_not_panics() {
        let new = |url| RedisCache::new(url, None, TIMEOUT, String::new(), metrics(), None);
        assert!(new("http://x").is_err());
        // rediss:// is a supported URL: only the missing runtime stops it here.
        assert!(new("rediss://x").is_err_and(|e| e.contains("tokio runtime")));
        let outside = new("redis://127.0.0.1:1/");
        assert!(outside.is_err_and(|e| e.contains("tokio runtime")));
    }

    #[tokio::test]
    async fn unreachable_redis_misses_promptly_and_counts_errors() {
        let (cache, m) = cache(&url_for_port(free_port()), Some(KEY));
        let started = Instant::now();
        assert_eq!(cache.get(&KEY).await, None);
        assert!(
            started.elapsed() < BOUND,
            "get took {:?}",
            started.elapsed()
        );
        assert!(m.errors.get() >= 1);
        let started = Instant::now();
        cache.set(&KEY, b"value", Duration::from_secs(1)).await;
        assert!(
            started.elapsed() < BOUND,
            "set took {:?}",
            started.elapsed()
        );
        assert_eq!((m.hits.get(), m.misses.get()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_values_round_trip_through_a_real_redis() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (cache, m) = cache(&server.url(), None);
        assert!(eventually(Duration::from_secs(5), || round_trips(&cache, 1)).await);
        cache
            .set(&KEY, b"plain answer", Duration::from_secs(10))
            .await;
        assert_eq!(cache.get(&KEY).await.as_deref(), Some(&b"plain answer"[..]));
        let stored = raw_get(&server.url(), &cache.shared.redis_key(&KEY)).await;
        assert_eq!(stored.as_deref(), Some(&b"plain answer"[..]));
        let misses = m.misses.get();
        assert_eq!(cache.get(&[2; 32]).await, None);
        assert_eq!(m.misses.get(), misses + 1);
        assert!(m.hits.get() >= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encrypted_values_are_opaque_in_redis_and_bound_to_the_key() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (cache, m) = cache(&server.url(), Some(KEY));
        assert!(eventually(Duration::from_secs(5), || round_trips(&cache, 1)).await);
        let connected_errors = m.errors.get();
        let secret = b"a completion nobody may read from redis";
        cache.set(&KEY, secret, Duration::from_secs(10)).await;
        assert_eq!(cache.get(&KEY).await.as_deref(), Some(&secret[..]));

        let stored = raw_get(&server.url(), &cache.shared.redis_key(&KEY))
            .await
            .expect("stored");
        assert_eq!(stored.len(), NONCE_LEN + secret.len() + TAG_LEN);
        assert!(
            !stored.windows(8).any(|w| secret.windows(8).any(|s| s == w)),
            "plaintext leaked"
        );

        let (other, other_m) = self::cache(&server.url(), Some([8; 32]));
        assert!(eventually(Duration::from_secs(5), || round_trips(&other, 3)).await);
        let errors = other_m.errors.get();
        assert_eq!(other.get(&KEY).await, None, "another key cannot read it");
        assert_eq!(other_m.errors.get(), errors + 1);
        assert_eq!(m.errors.get(), connected_errors, "no errors once connected");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_expire_after_their_ttl() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (cache, _) = cache(&server.url(), Some(KEY));
        assert!(eventually(Duration::from_secs(5), || round_trips(&cache, 1)).await);
        cache
            .set(&KEY, b"short-lived", Duration::from_millis(200))
            .await;
        assert_eq!(cache.get(&KEY).await.as_deref(), Some(&b"short-lived"[..]));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cache.get(&KEY).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_redis_costs_at_most_the_timeout_and_a_restarted_one_is_used_again() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let (cache, m) = cache(&server.url(), None);
        assert!(eventually(Duration::from_secs(5), || round_trips(&cache, 1)).await);
        cache.set(&KEY, b"before", Duration::from_secs(60)).await;
        server.kill();

        let errors = m.errors.get();
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(cache.get(&KEY).await, None);
            assert!(
                started.elapsed() < BOUND,
                "get took {:?}",
                started.elapsed()
            );
            let started = Instant::now();
            cache.set(&KEY, b"during", Duration::from_secs(60)).await;
            assert!(
                started.elapsed() < BOUND,
                "set took {:?}",
                started.elapsed()
            );
        }
        assert!(m.errors.get() >= errors + 6, "every skipped call counts");

        let _server = RedisServer::start_on(server.port);
        assert!(
            eventually(Duration::from_secs(10), || round_trips(&cache, 2)).await,
            "no reconnect"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_costs_at_most_the_timeout() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (cache, m) = cache(&server.url(), None);
        assert!(eventually(Duration::from_secs(5), || round_trips(&cache, 1)).await);
        server.signal("STOP");
        let errors = m.errors.get();
        let started = Instant::now();
        assert_eq!(cache.get(&KEY).await, None);
        let took = started.elapsed();
        assert!(took >= TIMEOUT && took < BOUND, "get took {took:?}");
        assert_eq!(m.errors.get(), errors + 1);
        // In the cooldown that follows, calls do not wait at all.
        let started = Instant::now();
        cache.set(&KEY, b"x", Duration::from_secs(1)).await;
        assert!(
            started.elapsed() < TIMEOUT,
            "set took {:?}",
            started.elapsed()
        );
        server.signal("CONT");
        assert!(eventually(Duration::from_secs(10), || round_trips(&cache, 2)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_that_starts_after_sluice_is_used_once_it_is_up() {
        let port = free_port();
        let (cache, m) = cache(&url_for_port(port), Some(KEY));
        assert_eq!(cache.get(&KEY).await, None);
        assert!(m.errors.get() >= 1);
        let Some(_server) = RedisServer::binary().map(|_| RedisServer::start_on(port)) else {
            return;
        };
        assert!(
            eventually(Duration::from_secs(10), || round_trips(&cache, 1)).await,
            "never connected"
        );
    }
}
