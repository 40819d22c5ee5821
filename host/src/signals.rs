//! Signals and calls that block the caller's thread (the blocking API).
//!
//! On one plain server over TCP the calls read from Redis on the caller's thread. A signal
//! handled there breaks the read (EINTR; with a read time-out set, even under `SA_RESTART`).
//! During a blocking pop that is harmless: the pop is sent again, or the wait ends where the
//! caller asked for that. During a script's round trip it is not: the script has run, and
//! sending it again would run it twice (a second grant, a second place in the queue, while the
//! first is left to expire). So asynchronous signals are held back while a script or command is
//! on the wire, and handled right after. Elsewhere (several masters, a Cluster, TLS, a unix
//! socket) the caller's thread only waits for the runtime; see `blocking::block_on_interruptible`.

#![allow(unsafe_code)] // libc: the thread's signal mask

use std::cell::Cell;

thread_local! {
    static SIGNALS_END_WAITS: Cell<bool> = const { Cell::new(false) };
    /// A signal was held back while [`SIGNALS_END_WAITS`] was on: the call's next wait ends.
    static HELD_BACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, blocking calls on this thread, so that a signal delivered to this thread while
/// one waits for permits ends the wait with [`crate::Error::Cancelled`] (the waiter leaves the
/// queue and keeps nothing). For callers that act on signals only between
/// calls: Python runs its handlers once the native call returns, so Ctrl-C could not end a wait.
/// Otherwise a wait a signal interrupts (`EINTR`) is taken up again and keeps its place.
pub fn signals_end_waits<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SIGNALS_END_WAITS.with(|on| on.set(self.0));
            HELD_BACK.with(|held| held.set(false));
        }
    }
    HELD_BACK.with(|held| held.set(false));
    let _restore = Restore(SIGNALS_END_WAITS.with(|on| on.replace(true)));
    f()
}

/// Whether a signal ends a wait on this thread (see [`signals_end_waits`]).
pub(crate) fn signals_end_waits_here() -> bool {
    SIGNALS_END_WAITS.with(Cell::get)
}

/// Whether a signal was held back (see [`without_interruption`]) since the last time this was
/// asked, where signals end waits; then the wait about to start ends at once instead.
pub(crate) fn take_held_back() -> bool {
    signals_end_waits_here() && HELD_BACK.with(|held| held.replace(false))
}

/// Runs `f` (one request and its reply, on this thread) with asynchronous signals blocked on
/// the thread; those that arrive meanwhile are handled once it returns. Signals that report a
/// fault of the thread itself (SIGSEGV and the like) stay open. Where signals end waits, one held
/// back is noted for [`take_held_back`]. Costs two `pthread_sigmask` calls when nothing arrives.
pub(crate) fn without_interruption<R>(f: impl FnOnce() -> R) -> R {
    let held = Held::new();
    let out = f();
    if signals_end_waits_here() && held.arrived() {
        HELD_BACK.with(|held| held.set(true));
    }
    out
}

/// This thread's asynchronous signals held back from its creation until it is dropped (also
/// when unwinding), when those that arrived meanwhile are handled. Signals that report a fault
/// of the thread itself (SIGSEGV and the like) stay open.
pub(crate) struct Held {
    /// The thread's mask before.
    before: libc::sigset_t,
}

/// Every signal but those that report a fault of the thread itself (SIGSEGV and the like, which
/// wasmtime's traps need too).
fn asynchronous_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigfillset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for fault in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS, libc::SIGABRT] {
            libc::sigdelset(&mut set, fault);
        }
        set
    }
}

static KEEP_OFF_RUNTIME_THREADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Has the runtime's threads that start from now on keep the process's asynchronous signals
/// off, for a process that acts on signals between calls ([`signals_end_waits`], as the Python
/// SDK does): a signal sent to the whole process while a caller's thread holds signals back
/// for a round trip then stays pending for that thread, which ends its wait. Without this a
/// runtime thread may take it (its handler runs there) and the wait goes on. Call it before the
/// first semaphore: threads already started keep their mask. Not the default: threads that a
/// foreign runtime starts from one of ours (a JVM's dispatcher workers, started by the thread
/// that resumes a coroutine) would keep those signals off for life, and pass that on to the
/// processes they spawn.
pub fn keep_signals_off_runtime_threads() {
    KEEP_OFF_RUNTIME_THREADS.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Run by each runtime thread as it starts (see [`keep_signals_off_runtime_threads`]).
pub(crate) fn keep_off_this_thread() {
    if KEEP_OFF_RUNTIME_THREADS.load(std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: a valid set; the previous mask is not wanted.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &asynchronous_signals(), std::ptr::null_mut()) };
    }
}

impl Held {
    pub(crate) fn new() -> Held {
        // SAFETY: pthread_sigmask writes the previous mask into `before`, which starts zeroed (a
        // valid empty set).
        unsafe {
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &asynchronous_signals(), &mut before);
            Held { before }
        }
    }

    /// Whether a signal with a handler arrived, held back, since (see `arrived_while_blocked`).
    pub(crate) fn arrived(&self) -> bool {
        arrived_while_blocked(&self.before)
    }

    /// Waits until `fd` is readable (true), or a signal arrives (false): held-back signals are
    /// let through only for the wait itself, atomically with it where the platform allows
    /// (ppoll), so that none slips in between a check and the wait and goes unseen.
    pub(crate) fn wait_readable(&self, fd: std::os::fd::RawFd) -> bool {
        if self.arrived() {
            return false;
        }
        let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: one valid pollfd, no time-out, and the thread's own earlier mask.
        let r = unsafe { libc::ppoll(&mut pollfd, 1, std::ptr::null(), &self.before) };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        // SAFETY: as above; without ppoll, the mask is lifted around the wait (a signal in the
        // instant before poll(2) starts is handled, and the wait goes on).
        let r = unsafe {
            let mut held: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.before, &mut held);
            let r = libc::poll(&mut pollfd, 1, -1);
            libc::pthread_sigmask(libc::SIG_SETMASK, &held, std::ptr::null_mut());
            r
        };
        r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`, from a valid sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.before, std::ptr::null_mut()) };
    }
}

/// Whether a signal that `before` (the thread's own mask) lets through, and that has a handler
/// (not one ignored or left to its default, such as SIGCHLD), is pending now.
fn arrived_while_blocked(before: &libc::sigset_t) -> bool {
    // SAFETY: sigpending and sigaction fill zeroed structs; sigismember only reads the sets.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 {
            return false;
        }
        // Every signal number of Linux (real-time ones included) and of the BSDs and macOS;
        // sigismember answers -1 for one a platform does not have.
        (1..=64).any(|s| {
            let mut action: libc::sigaction = std::mem::zeroed();
            libc::sigismember(&pending, s) == 1
                && libc::sigismember(before, s) != 1
                && libc::sigaction(s, std::ptr::null(), &mut action) == 0
                && action.sa_sigaction != libc::SIG_DFL
                && action.sa_sigaction != libc::SIG_IGN
        })
    }
}
