//! Request ids: the client's `x-request-id` when it sends a usable one, else one made
//! here (`req_` + 24 hex digits: a random per-process prefix and a counter, so making
//! one costs no system call). The http layer returns it on the response, opens a
//! tracing span with it (every log line of the request names it) and runs the request
//! in a task-local scope, from which the backends copy it onto every upstream request;
//! work a request starts in another task (a shared generation) carries it along.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The header, in both directions.
pub const HEADER: &str = "x-request-id";

/// Longest id accepted from a client; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// One request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The client's id if it is 1–128 visible ASCII characters, else a new one.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            Some(v) if usable(v) => RequestId(Arc::from(String::from_utf8_lossy(v).as_ref())),
            _ => Self::generate(),
        }
    }

    /// A new id, unique within this process and very likely across replicas.
    pub fn generate() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId(Arc::from(format!("req_{prefix:016x}{:08x}", n as u32)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Run `f` with this id as the current one.
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// Run the synchronous `f` with this id as the current one (a response body's poll).
    pub fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// The id of the request being served by this task, if any.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// `f` under the current request's id (for work handed to another task).
    pub fn carry<F: Future>(f: F) -> impl Future<Output = F::Output> {
        let id = Self::current();
        async move {
            match id {
                Some(id) => id.scope(f).await,
                None => f.await,
            }
        }
    }
}

fn usable(v: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&v.len()) && v.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_id_is_kept_and_a_bad_one_replaced() {
        assert_eq!(RequestId::from_header(Some(b"abc-123")).as_str(), "abc-123");
        for bad in [&b""[..], b"has space", b"\xff\xfe", &[b'a'; 129][..]] {
            let id = RequestId::from_header(Some(bad));
            assert!(id.as_str().starts_with("req_"), "{bad:?}");
        }
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 4 + 24);
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_and_carried_to_other_tasks() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::from_header(Some(b"r-1"));
        let seen = id
            .clone()
            .scope(async {
                let here = RequestId::current();
                let there = tokio::spawn(RequestId::carry(async { RequestId::current() }))
                    .await
                    .unwrap();
                (here, there)
            })
            .await;
        assert_eq!(seen, (Some(id.clone()), Some(id)));
    }
}
