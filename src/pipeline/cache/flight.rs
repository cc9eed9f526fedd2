//! Single-flight: identical requests in flight at the same time share one backend
//! generation. The generation runs in its own task and appends every event to the
//! flight's history; each subscriber replays the history from the start and then
//! follows live, so one that joins mid-stream first gets what was already produced. The
//! generation is cancelled only when the last subscriber has gone; an error ends every
//! subscriber's stream with the same error. When the flight finishes, `on_done` gets the
//! whole completion (the cache stores it if it finished).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::key::Key;
use crate::domain::{Completion, Event, EventStream};
use crate::error::BackendError;

type Item = Result<Event, BackendError>;
type Registry = Arc<Mutex<HashMap<Key, Arc<Flight>>>>;

struct Flight {
    state: Mutex<State>,
    notify: Notify,
    cancel: CancellationToken,
}

#[derive(Default)]
struct State {
    events: Vec<Item>,
    done: bool,
    subscribers: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The flights in progress, by key.
#[derive(Default)]
pub struct Flights {
    map: Registry,
}

/// How a request got its stream.
pub enum Joined {
    /// It started the generation.
    Led(EventStream),
    /// It joined an identical one already running.
    Followed(EventStream),
}

impl Flights {
    /// Join the flight for `key`, or start one with `start` (registered under `key` when
    /// `shared`, so later identical requests can join; private otherwise).
    pub fn join<S, D, DF>(&self, key: Key, shared: bool, start: S, on_done: D) -> Joined
    where
        S: Future<Output = Result<EventStream, BackendError>> + Send + 'static,
        D: FnOnce(Completion) -> DF + Send + 'static,
        DF: Future<Output = ()> + Send + 'static,
    {
        let mut map = lock(&self.map);
        if shared {
            if let Some(flight) = map.get(&key) {
                let mut state = lock(&flight.state);
                if !state.done && !flight.cancel.is_cancelled() {
                    state.subscribers += 1;
                    drop(state);
                    return Joined::Followed(self.subscribe(key, flight.clone(), shared));
                }
            }
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State {
                subscribers: 1,
                ..State::default()
            }),
            notify: Notify::new(),
            cancel: CancellationToken::new(),
        });
        if shared {
            map.insert(key, flight.clone());
        }
        drop(map);
        tokio::spawn(drive(
            flight.clone(),
            start,
            on_done,
            shared.then(|| (self.map.clone(), key)),
        ));
        Joined::Led(self.subscribe(key, flight, shared))
    }

    fn subscribe(&self, key: Key, flight: Arc<Flight>, shared: bool) -> EventStream {
        let guard = Subscriber {
            flight: flight.clone(),
            map: shared.then(|| (self.map.clone(), key)),
        };
        Box::pin(async_stream::stream! {
            let _guard = guard;
            let mut next = 0;
            loop {
                let notified = flight.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (batch, done) = {
                    let state = lock(&flight.state);
                    (state.events[next..].to_vec(), state.done)
                };
                next += batch.len();
                let empty = batch.is_empty();
                for item in batch {
                    yield item;
                }
                if done && next >= lock(&flight.state).events.len() {
                    break;
                }
                if empty {
                    notified.await;
                }
            }
        })
    }
}

/// One subscriber's share of a flight: when the last one goes, the generation stops.
struct Subscriber {
    flight: Arc<Flight>,
    map: Option<(Registry, Key)>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // The registry lock orders this against `join`, so nobody joins a flight that
        // is being cancelled.
        let map = self.map.as_ref().map(|(m, _)| lock(m));
        let mut state = lock(&self.flight.state);
        state.subscribers = state.subscribers.saturating_sub(1);
        if state.subscribers == 0 && !state.done {
            self.flight.cancel.cancel();
            if let (Some(mut map), Some((_, key))) = (map, &self.map) {
                if map.get(key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                    map.remove(key);
                }
            }
        }
    }
}

async fn drive<S, D, DF>(
    flight: Arc<Flight>,
    start: S,
    on_done: D,
    registered: Option<(Registry, Key)>,
) where
    S: Future<Output = Result<EventStream, BackendError>>,
    D: FnOnce(Completion) -> DF,
    DF: Future<Output = ()>,
{
    let push = |item: Item| {
        lock(&flight.state).events.push(item);
        flight.notify.notify_waiters();
    };
    let mut done = Completion::default();
    let mut finished = false;
    let stream = tokio::select! {
        s = start => s,
        () = flight.cancel.cancelled() => Err(BackendError::ShuttingDown),
    };
    match stream {
        Err(e) => {
            if !flight.cancel.is_cancelled() {
                push(Err(e));
            }
        }
        Ok(mut stream) => loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = flight.cancel.cancelled() => break,
            };
            match next {
                Some(Ok(event)) => {
                    finished |= matches!(event, Event::Finish { .. });
                    done.push(event.clone());
                    push(Ok(event));
                }
                Some(Err(e)) => {
                    push(Err(e));
                    break;
                }
                None => break,
            }
        },
    }
    if let Some((map, key)) = registered {
        let mut map = lock(&map);
        if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            map.remove(&key);
        }
    }
    lock(&flight.state).done = true;
    flight.notify.notify_waiters();
    if finished && !flight.cancel.is_cancelled() {
        on_done(done).await;
    }
}
