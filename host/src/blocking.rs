//! The blocking API: the async one driven to completion on the calling thread, whose calls run
//! there too (with blocking I/O on one plain server; otherwise the runtime's threads drive the
//! connections). Safe from any thread, but it blocks that thread: not from an executor's.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use pottery_semaphore_core::{Permit, Status};

use crate::{Error, Options, Semaphore};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread, parking between wake-ups.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// [`Semaphore`] for synchronous code. Clone it freely across threads: a thread blocked in
/// `acquire` does not hold up a `release` from another. Calls run on the calling thread (within
/// the runtime's context, whose threads drive the Redis connections), sparing a thread hand-off.
#[derive(Debug, Clone)]
pub struct BlockingSemaphore {
    inner: Semaphore,
    async_handle: Semaphore,
}

impl BlockingSemaphore {
    pub fn open(options: Options) -> Result<Self, Error> {
        Ok(block_on(Semaphore::open(options))?.into())
    }

    /// True when calls enter the guest synchronously on the caller's thread (one plain server);
    /// false when they drive the async path to completion (a cluster, several masters).
    pub fn on_caller_thread(&self) -> bool {
        self.inner.serves_caller_thread()
    }

    /// The async handle sharing this one's holder identity.
    pub fn as_async(&self) -> &Semaphore {
        &self.async_handle
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _context = self.inner.runtime().tokio.enter();
        block_on(fut)
    }

    pub fn acquire(&self, blocking: bool, timeout: Option<Duration>) -> Result<bool, Error> {
        self.block_on(self.inner.acquire(blocking, timeout))
    }

    pub fn acquire_n(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        self.block_on(self.inner.acquire_n(n, blocking, timeout))
    }

    pub fn release(&self, n: i64) -> Result<(), Error> {
        self.block_on(self.inner.release(n))
    }

    pub fn release_permits(&self, tokens: Vec<u64>) -> Result<Vec<u64>, Error> {
        self.block_on(self.inner.release_permits(tokens))
    }

    pub fn value(&self) -> Result<u64, Error> {
        self.block_on(self.inner.value())
    }

    pub fn initial_value(&self) -> Result<u64, Error> {
        self.block_on(self.inner.initial_value())
    }

    pub fn locked(&self) -> Result<bool, Error> {
        self.block_on(self.inner.locked())
    }

    pub fn permits(&self) -> Result<Vec<Permit>, Error> {
        self.block_on(self.inner.permits())
    }

    pub fn status(&self) -> Result<Status, Error> {
        self.block_on(self.inner.status())
    }

    pub fn set_permits(&self, value: i64) -> Result<u64, Error> {
        self.block_on(self.inner.set_permits(value))
    }

    pub fn add_permits(&self, delta: i64) -> Result<u64, Error> {
        self.block_on(self.inner.add_permits(delta))
    }

    pub fn refresh(&self) -> Result<(), Error> {
        self.block_on(self.inner.refresh())
    }

    pub fn held(&self) -> Vec<Permit> {
        self.inner.held()
    }

    pub fn take_lost(&self) -> Vec<Permit> {
        self.inner.take_lost()
    }
}

impl From<Semaphore> for BlockingSemaphore {
    fn from(handle: Semaphore) -> Self {
        BlockingSemaphore { inner: handle.inline(), async_handle: handle }
    }
}
