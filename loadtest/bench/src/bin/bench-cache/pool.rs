//! The hit workload's connection pool (see main.rs): a fixed number of keep-alive
//! connections, opened and used once before the first measured phase. A request takes
//! the most recently returned idle connection or, when all are busy, waits for one in
//! arrival order (the wait counts in its latency), as a client with a pool limit does.
//!
//! Why not open another connection whenever none is idle: sluice listens with tokio's
//! default backlog (128). When sluice stalls for a few ms at 20,000 req/s, hundreds of
//! connections opened at once overflow it; the kernel drops the SYNs and each of those
//! requests then waits for the 1 s SYN retransmission (`nstat`: TcpExtListenOverflows).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::oneshot;

use crate::client::Conn;

pub struct Pool {
    addr: SocketAddr,
    size: usize,
    idle: RefCell<Vec<Conn>>,
    waiters: RefCell<VecDeque<oneshot::Sender<Conn>>>,
    open: Cell<usize>,
    /// Connections opened so far (the initial fill and replacements of broken ones).
    pub opened: Cell<usize>,
    /// Requests that had to wait for a connection.
    pub waited: Cell<u64>,
}

/// A connection taken from the pool. Dropped without `release` (an error, a timeout,
/// `connection: close`), it is closed and the pool opens a replacement for any waiter.
pub struct Lease {
    pool: Rc<Pool>,
    conn: Option<Conn>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// Back to the pool for the next request.
    pub fn release(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.checkin(c);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.discard();
        }
    }
}

impl Pool {
    pub fn new(addr: SocketAddr, size: usize) -> Pool {
        Pool {
            addr,
            size,
            idle: RefCell::new(Vec::with_capacity(size)),
            waiters: RefCell::new(VecDeque::new()),
            open: Cell::new(0),
            opened: Cell::new(0),
            waited: Cell::new(0),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Adds an open (and already used) connection, as part of the initial fill.
    pub fn add(&self, c: Conn) {
        self.open.set(self.open.get() + 1);
        self.opened.set(self.opened.get() + 1);
        self.checkin(c);
    }

    pub async fn checkout(self: &Rc<Self>) -> Result<Lease, String> {
        let idle = self.idle.borrow_mut().pop();
        let conn = match idle {
            Some(c) => c,
            None if self.open.get() < self.size => {
                self.open.set(self.open.get() + 1);
                self.opened.set(self.opened.get() + 1);
                match Conn::connect(self.addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.open.set(self.open.get() - 1);
                        return Err(e.into());
                    }
                }
            }
            None => {
                let (tx, rx) = oneshot::channel();
                self.waiters.borrow_mut().push_back(tx);
                self.waited.set(self.waited.get() + 1);
                rx.await.map_err(|_| "pool_closed".to_owned())?
            }
        };
        Ok(Lease {
            pool: self.clone(),
            conn: Some(conn),
        })
    }

    fn checkin(&self, mut c: Conn) {
        loop {
            let waiter = self.waiters.borrow_mut().pop_front();
            match waiter {
                // A waiter that gave up (timed out) hands the connection back.
                Some(tx) => match tx.send(c) {
                    Ok(()) => return,
                    Err(back) => c = back,
                },
                None => {
                    self.idle.borrow_mut().push(c);
                    return;
                }
            }
        }
    }

    /// A leased connection was closed: open a replacement if someone is waiting.
    fn discard(self: &Rc<Self>) {
        self.open.set(self.open.get() - 1);
        if self.waiters.borrow().is_empty() {
            return;
        }
        self.open.set(self.open.get() + 1);
        self.opened.set(self.opened.get() + 1);
        let pool = self.clone();
        tokio::task::spawn_local(async move {
            match Conn::connect(pool.addr).await {
                Ok(c) => pool.checkin(c),
                Err(_) => pool.open.set(pool.open.get() - 1),
            }
        });
    }
}
