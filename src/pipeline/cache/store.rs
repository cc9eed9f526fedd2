//! The local (first-level) cache: a moka cache of finished answers, weighted by their
//! size in bytes and bounded by `cache.max_bytes`, with the TTL checked on every read
//! against tokio's clock (so tests can pause time). Counts entries, bytes and
//! size evictions into the metrics.

use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::key::Key;
use crate::domain::{Completion, FinishReason, Step, ToolCall, Usage};
use crate::metrics::Metrics;

/// A finished answer as stored: what a replay needs, in both levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub content: String,
    pub tool_calls: Vec<StoredCall>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// An agent run's tool calls, replayed so a trace of a hit shows them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Answer {
    /// A completed generation, or `None` when it did not finish.
    pub fn from_completion(done: &Completion) -> Option<Self> {
        let usage = done.usage.unwrap_or_default();
        Some(Answer {
            content: done.content.clone(),
            tool_calls: done
                .tool_calls
                .iter()
                .map(|c| StoredCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            finish_reason: done.finish_reason?,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            steps: done.steps.clone(),
        })
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
        }
    }

    pub fn calls(&self) -> impl Iterator<Item = ToolCall> + '_ {
        self.tool_calls.iter().map(|c| ToolCall {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        })
    }

    /// What the entry costs in memory, roughly.
    fn weight(&self) -> u32 {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len() + 48)
            .sum();
        let steps: usize = self
            .steps
            .iter()
            .map(|s| s.tool.len() + s.call_id.len() + s.arguments.len() + 96)
            .sum();
        (self.content.len() + calls + steps + 128).min(u32::MAX as usize) as u32
    }
}

#[derive(Clone)]
struct Entry {
    answer: Arc<Answer>,
    expires: Instant,
}

pub struct Store {
    cache: moka::future::Cache<Key, Entry>,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl Store {
    pub fn new(max_bytes: u64, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        let evictions = metrics.cache_evictions.clone();
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, entry: &Entry| entry.answer.weight())
            // A backstop for memory; the exact TTL is checked on read.
            .time_to_live(ttl + Duration::from_secs(1))
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Store {
            cache,
            ttl,
            metrics,
        }
    }

    pub async fn get(&self, key: &Key) -> Option<Arc<Answer>> {
        let entry = self.cache.get(key).await?;
        if Instant::now() >= entry.expires {
            self.cache.invalidate(key).await;
            self.cache.run_pending_tasks().await;
            self.refresh_gauges();
            return None;
        }
        Some(entry.answer)
    }

    pub async fn insert(&self, key: Key, answer: Arc<Answer>) {
        let expires = Instant::now() + self.ttl;
        self.cache.insert(key, Entry { answer, expires }).await;
        self.cache.run_pending_tasks().await;
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        self.metrics
            .cache_entries
            .set(self.cache.entry_count() as i64);
        self.metrics
            .cache_bytes
            .set(self.cache.weighted_size() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Arc<Answer> {
        Arc::new(Answer {
            content: text.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            prompt_tokens: 3,
            completion_tokens: 2,
            steps: Vec::new(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl_on_tokio_time() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let store = Store::new(1 << 20, Duration::from_secs(60), metrics.clone());
        store.insert([1; 32], answer("kept")).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(store.get(&[1; 32]).await.unwrap().content, "kept");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get(&[1; 32]).await.is_none());
        assert_eq!(metrics.cache_entries.get(), 0);
    }

    #[tokio::test]
    async fn the_byte_bound_holds() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let store = Store::new(4_000, Duration::from_secs(60), metrics.clone());
        for i in 0..100u8 {
            store.insert([i; 32], answer(&"x".repeat(200))).await;
        }
        assert!(
            metrics.cache_bytes.get() <= 4_000,
            "{}",
            metrics.cache_bytes.get()
        );
        assert!(metrics.cache_evictions.get() > 0);
    }
}
