//! The blocking API: the async one driven to completion on the calling thread, whose calls run
//! there too (with blocking I/O on one plain server; otherwise the runtime's threads drive the
//! connections). Safe from any thread, but it blocks that thread: not from an executor's.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// Wakes `block_on_interruptible` through a pipe it polls: std's parking and condition
/// variables wait on futexes and wait again after a signal, where poll(2) returns `EINTR`.
struct PipeWaker {
    read: OwnedFd,
    write: OwnedFd,
}

impl PipeWaker {
    #[allow(unsafe_code)] // libc: a pipe, its flags
    fn new() -> Option<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into `fds`, which then belong to us alone.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created, and are owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: fcntl on a descriptor we own; a failure leaves it blocking, which only the
            // waker's write could notice (the pipe holds far more than one wake-up needs).
            unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) | libc::O_NONBLOCK);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Some(PipeWaker { read, write })
    }

    /// Waits for a wake-up, signals held back but for the wait (see `Held::wait_readable`);
    /// false when a signal came first.
    #[allow(unsafe_code)] // libc: read on our own pipe
    fn wait(&self, held: &crate::signals::Held) -> bool {
        if !held.wait_readable(self.read.as_raw_fd()) {
            return false;
        }
        let mut drain = [0u8; 64];
        // SAFETY: reads into a buffer of its length from our non-blocking pipe, until empty.
        while unsafe { libc::read(self.read.as_raw_fd(), drain.as_mut_ptr().cast(), drain.len()) } > 0 {}
        true
    }
}

impl Wake for PipeWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    #[allow(unsafe_code)] // libc: write to our own pipe
    fn wake_by_ref(self: &Arc<Self>) {
        // SAFETY: writes one byte from a live buffer; a full pipe (EAGAIN) already wakes.
        unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }
}

/// As [`block_on`], but a signal delivered to this thread while it runs ends it: `None`, and
/// `fut` is dropped (so it must be one whose drop cancels cleanly). Signals are held back but
/// for the waits, so that one arriving while `fut` is polled is seen too.
fn block_on_interruptible<F: Future>(fut: F) -> Option<F::Output> {
    let Some(pipe) = PipeWaker::new().map(Arc::new) else { return Some(block_on(fut)) };
    let mut fut = pin!(fut);
    let waker = Waker::from(pipe.clone());
    let mut cx = Context::from_waker(&waker);
    let held = crate::signals::Held::new();
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        if !pipe.wait(&held) {
            return None;
        }
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

    /// True when calls enter the guest synchronously on the caller's thread (one plain server over TCP);
    /// false when they drive the async path to completion (a cluster, several masters, TLS, a
    /// unix socket).
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

    /// Whether an acquire's wait is the runtime's (a cluster, several masters) and a signal
    /// should end it (inside [`crate::signals_end_waits`]): it then runs through the async
    /// handle, whose future, dropped, cancels the acquire (the guest leaves the queue, gives
    /// back its claims and keeps nothing, in the background), where the inline one would be
    /// torn down mid-call.
    fn interruptible(&self) -> bool {
        crate::signals::signals_end_waits_here() && !self.inner.serves_caller_thread()
    }

    fn block_on_interruptible<T>(&self, fut: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let _context = self.inner.runtime().tokio.enter();
        block_on_interruptible(fut).unwrap_or(Err(Error::Cancelled))
    }

    pub fn acquire(&self, blocking: bool, timeout: Option<Duration>) -> Result<bool, Error> {
        if self.interruptible() {
            return self.block_on_interruptible(self.async_handle.acquire(blocking, timeout));
        }
        self.block_on(self.inner.acquire(blocking, timeout))
    }

    pub fn acquire_n(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        self.acquire_granted(n, blocking, timeout, false)
    }

    /// See [`Semaphore::acquire_n_spared`].
    pub fn acquire_n_spared(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        self.acquire_granted(n, blocking, timeout, true)
    }

    fn acquire_granted(&self, n: i64, blocking: bool, timeout: Option<f64>, spared: bool) -> Result<Vec<Permit>, Error> {
        if self.interruptible() {
            return self.block_on_interruptible(self.async_handle.acquire_granted(n, blocking, timeout, spared));
        }
        self.block_on(self.inner.acquire_granted(n, blocking, timeout, spared))
    }

    /// [`Semaphore::acquire_n_until`], for a caller that waits on a thread of its own while
    /// something else decides when to give up (a greenlet, whose wait the Python SDK hands to
    /// a thread of its own under gevent).
    pub fn acquire_n_until(
        &self,
        n: i64,
        blocking: bool,
        timeout: Option<f64>,
        spared: bool,
        stop: impl Future<Output = ()>,
    ) -> Result<Vec<Permit>, Error> {
        self.block_on(self.async_handle.acquire_n_until(n, blocking, timeout, spared, stop))
    }

    /// See [`Semaphore::unspare`].
    pub fn unspare(&self, tokens: &[u64]) {
        self.inner.unspare(tokens);
    }

    /// [`Semaphore::give_back_soon`]: returns at once.
    pub fn give_back_soon(&self, tokens: Vec<u64>) {
        self.inner.give_back_soon(tokens);
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
