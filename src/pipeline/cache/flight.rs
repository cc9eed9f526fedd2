//! Single-flight: identical requests in flight at the same time share one backend
//! generation. The generation runs in its own task and appends every event to the
//! flight's history; each subscriber replays the history from the start and then
//! follows live, so one that joins mid-stream first gets what was already produced. The
//! generation is cancelled only when the last subscriber has gone; an error ends every
//! subscriber's stream with the same error. When the generation finishes, `on_done` gets
//! the whole completion *before* the flight is released (the cache stores it locally
//! then, so an identical request arriving at any moment either joins the flight or finds
//! the answer stored); what `on_done` leaves for later (the write to Redis) runs after the
//! release, without holding up the subscribers. However the flight's task stops — a
//! panic included — a drop guard releases the flight, ending every subscriber's stream
//! (with an error if it had not finished), so the next identical request starts afresh.

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
    #[cfg(test)]
    pause: Option<Arc<Pause>>,
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
    #[cfg(test)]
    pause: Option<Arc<Pause>>,
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
    /// `on_done` runs before the flight is released; the future it returns, after.
    pub fn join<S, D, DF, L>(&self, key: Key, shared: bool, start: S, on_done: D) -> Joined
    where
        S: Future<Output = Result<EventStream, BackendError>> + Send + 'static,
        D: FnOnce(Completion) -> DF + Send + 'static,
        DF: Future<Output = Option<L>> + Send + 'static,
        L: Future<Output = ()> + Send + 'static,
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
            #[cfg(test)]
            pause: self.pause.clone(),
        });
        if shared {
            map.insert(key, flight.clone());
        }
        drop(map);
        // The generation runs under the id of the request that started it.
        tokio::spawn(crate::request_id::RequestId::carry(drive(
            flight.clone(),
            start,
            on_done,
            shared.then(|| (self.map.clone(), key)),
        )));
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

/// Releases a flight when its task stops, however it stops: normally through
/// [`Landing::release`], or — when the task panics or the runtime drops it — on drop,
/// where a flight that had not finished gets an error as its last event first. Either
/// way nobody is left waiting and nobody joins the flight afterwards.
struct Landing {
    flight: Arc<Flight>,
    registered: Option<(Registry, Key)>,
    released: bool,
}

impl Landing {
    /// Take the flight out of the registry and end every subscriber's stream after the
    /// history. Under the registry lock, like `join`: a request joins before this or
    /// finds no flight.
    fn release(&mut self) {
        self.released = true;
        let map = self.registered.as_ref().map(|(map, key)| {
            let mut map = lock(map);
            if map.get(key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                map.remove(key);
            }
            map
        });
        lock(&self.flight.state).done = true;
        drop(map);
        self.flight.notify.notify_waiters();
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        {
            let mut state = lock(&self.flight.state);
            let ended = matches!(state.events.last(), Some(Err(_) | Ok(Event::Finish { .. })));
            if !ended {
                state.events.push(Err(BackendError::Protocol(
                    "internal error: the generation stopped unexpectedly; retry the request".into(),
                )));
            }
        }
        self.release();
    }
}

async fn drive<S, D, DF, L>(
    flight: Arc<Flight>,
    start: S,
    on_done: D,
    registered: Option<(Registry, Key)>,
) where
    S: Future<Output = Result<EventStream, BackendError>>,
    D: FnOnce(Completion) -> DF,
    DF: Future<Output = Option<L>>,
    L: Future<Output = ()>,
{
    let mut landing = Landing {
        flight: flight.clone(),
        registered,
        released: false,
    };
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
    // Stored first, released second: until the release a request joins this flight,
    // after it the answer is in the store.
    let later = if finished && !flight.cancel.is_cancelled() {
        on_done(done).await
    } else {
        None
    };
    pause_point(&flight).await;
    landing.release();
    if let Some(later) = later {
        later.await;
    }
}

/// A test's hold on the first flight at the moment between its two completion steps.
#[cfg(test)]
pub(super) struct Pause {
    armed: std::sync::atomic::AtomicBool,
    /// Notified when the flight got there.
    pub reached: Notify,
    /// Notify to let it go on.
    pub resume: Notify,
}

#[cfg(test)]
impl Pause {
    pub fn new() -> Self {
        Pause {
            armed: true.into(),
            reached: Notify::new(),
            resume: Notify::new(),
        }
    }
}

#[cfg(test)]
impl Flights {
    /// Flights whose first one holds at `pause`.
    pub(super) fn paused(pause: Arc<Pause>) -> Self {
        Flights {
            map: Registry::default(),
            pause: Some(pause),
        }
    }
}

#[cfg(test)]
async fn pause_point(flight: &Flight) {
    use std::sync::atomic::Ordering;
    if let Some(pause) = flight
        .pause
        .as_ref()
        .filter(|p| p.armed.swap(false, Ordering::SeqCst))
    {
        pause.reached.notify_one();
        pause.resume.notified().await;
    }
}

#[cfg(not(test))]
async fn pause_point(_flight: &Flight) {}
