//! One process-wide runtime: a wasmtime Engine, the component compiled once (and cached on disk,
//! so the next process deserializes instead of compiling), an `InstancePre`, an epoch ticker,
//! and a small tokio runtime that drives every guest call and Redis connection.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{sync, Guest, GuestPre};
use crate::transport::HostState;
use crate::Error;

/// The component this crate was built with (see build.rs).
pub(crate) static COMPONENT: &[u8] = include_bytes!(env!("POTTERY_SEMAPHORE_COMPONENT_PATH"));

/// How often the epoch advances; the guest CPU budget is checked at this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits the host sets on every guest instance.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Linear memory cap of one guest instance.
    pub memory_limit: usize,
    /// Longest stretch of guest execution without returning to the host before it is trapped,
    /// counted in the epoch ticks (10 ms) it runs across: not the time a call spends yielded to
    /// a busy runtime.
    pub cpu_budget: Duration,
    /// Where the precompiled component is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Worker threads of the runtime's tokio runtime.
    pub worker_threads: usize,
    /// Run the component through wasmtime's Pulley interpreter instead of native code compiled
    /// at run time: for platforms that forbid JIT (iOS). Slower, same behaviour. On by default
    /// on Apple's mobile platforms ([`FORBIDS_JIT`]), elsewhere when `POTTERY_SEMAPHORE_PULLEY=1`.
    pub pulley: bool,
}

/// Platforms where a process may not map memory executable, which Cranelift's code needs.
pub const FORBIDS_JIT: bool = cfg!(any(target_os = "ios", target_os = "tvos", target_os = "watchos", target_os = "visionos"));

impl Default for EngineOptions {
    fn default() -> Self {
        // Only absolute paths (XDG's rule): an empty or relative one would put native code in
        // whatever directory the process starts in.
        let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let cache_dir = absolute("POTTERY_SEMAPHORE_CACHE_DIR").or_else(|| {
            let base = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")))?;
            Some(base.join("pottery-semaphore"))
        });
        let pulley = FORBIDS_JIT || std::env::var("POTTERY_SEMAPHORE_PULLEY").is_ok_and(|v| v == "1");
        EngineOptions { memory_limit: 16 << 20, cpu_budget: Duration::from_secs(1), cache_dir, worker_threads: 2, pulley }
    }
}

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) pre: GuestPre<HostState>,
    /// The same component linked to synchronous imports (see [`crate::bindings::sync`]).
    pub(crate) pre_sync: sync::GuestPre<HostState>,
    pub(crate) tokio: tokio::runtime::Runtime,
    pub(crate) options: EngineOptions,
    /// True when the component came from the on-disk cache rather than a fresh compilation.
    pub loaded_from_cache: bool,
}

impl Runtime {
    /// The options this runtime was started with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Whether the component runs in wasmtime's Pulley interpreter (as it must where JIT is
    /// forbidden), as the engine reports it rather than as asked.
    pub fn interprets(&self) -> bool {
        self.engine.is_pulley()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("options", &self.options).field("loaded_from_cache", &self.loaded_from_cache).finish_non_exhaustive()
    }
}

/// The process-wide runtime, by the process that started it (a child made by `fork()` starts
/// its own). The lock is held only to look and to note: never while the runtime starts, which
/// takes up to seconds, so that a fork meanwhile cannot leave the child a lock held by a thread
/// it does not have.
#[derive(Clone, Copy)]
enum Global {
    None,
    Starting { pid: u32 },
    Started { pid: u32, runtime: &'static Runtime },
}

static GLOBAL: Mutex<Global> = Mutex::new(Global::None);
/// Wakes the callers waiting for a runtime that another thread of their process is starting.
static STARTED: Condvar = Condvar::new();

/// Runs `f` on a thread of its own and awaits its result, leaving the caller's executor free.
async fn off_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::signals::keep_off_this_thread();
            let _ = tx.send(f());
        })
        .map_err(|e| Error::Runtime(format!("{name} thread: {e}")))?;
    rx.await.map_err(|_| Error::Runtime(format!("the {name} thread died")))
}

impl Runtime {
    /// [`Runtime::global`] for async code. Its first call in a process compiles or loads the
    /// component, for up to seconds: that runs on a thread of its own, not on the caller's
    /// executor (an asyncio loop, Android's main dispatcher, Swift's cooperative pool).
    pub async fn global_async() -> Result<&'static Runtime, Error> {
        let started = match GLOBAL.try_lock().as_deref() {
            Ok(&Global::Started { pid, runtime }) if pid == std::process::id() => Some(runtime),
            _ => None,
        };
        match started {
            Some(runtime) => Ok(runtime),
            None => off_thread("pottery-semaphore-init", Runtime::global).await?,
        }
    }

    /// The process-wide runtime with default options, started on first use. A child made by
    /// `fork()` inherits none of the parent's threads, so it gets a runtime of its own.
    pub fn global() -> Result<&'static Runtime, Error> {
        let pid = std::process::id();
        let mut global = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *global {
                Global::Started { pid: owner, runtime } if owner == pid => return Ok(runtime),
                // Another thread of this process is starting it: one compilation is enough.
                Global::Starting { pid: owner } if owner == pid => global = STARTED.wait(global).unwrap_or_else(|e| e.into_inner()),
                _ => break,
            }
        }
        *global = Global::Starting { pid };
        drop(global);
        /// Should starting panic, the callers waiting for it are let go (to try themselves).
        struct LetGoOnPanic;
        impl Drop for LetGoOnPanic {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = Global::None;
                    STARTED.notify_all();
                }
            }
        }
        let let_go = LetGoOnPanic;
        let started = Runtime::new(EngineOptions::default()).map(|rt| &*Box::leak(Box::new(rt)));
        drop(let_go);
        let mut global = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        // On failure the next caller tries again.
        *global = match started {
            Ok(runtime) => Global::Started { pid, runtime },
            Err(_) => Global::None,
        };
        STARTED.notify_all();
        started
    }

    /// A separate runtime; most programs want [`Runtime::global`]. Leak it or keep it for the
    /// life of the semaphores opened with it.
    pub fn new(options: EngineOptions) -> Result<Runtime, Error> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        if options.pulley {
            let target = if cfg!(target_pointer_width = "64") { "pulley64" } else { "pulley32" };
            config.target(target).map_err(|e| Error::Runtime(format!("pulley: {e:#}")))?;
        }
        let engine = Engine::new(&config).map_err(|e| Error::Runtime(format!("engine: {e:#}")))?;
        let (component, loaded_from_cache) = load_component(&engine, options.cache_dir.as_ref())?;
        let linker_error = |e: wasmtime::Error| Error::Runtime(format!("linker: {e:#}"));
        let mut linker = Linker::<HostState>::new(&engine);
        Guest::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state).map_err(linker_error)?;
        let mut sync_linker = Linker::<HostState>::new(&engine);
        sync::Guest::add_to_linker::<_, HasSelf<HostState>>(&mut sync_linker, |state| state).map_err(linker_error)?;
        let exports_error = |e: wasmtime::Error| Error::Runtime(format!("component exports: {e:#}"));
        let pre = linker.instantiate_pre(&component).map_err(linker_error)?;
        let pre = GuestPre::new(pre).map_err(exports_error)?;
        let pre_sync = sync_linker.instantiate_pre(&component).map_err(linker_error)?;
        let pre_sync = sync::GuestPre::new(pre_sync).map_err(exports_error)?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.worker_threads.max(1))
            .thread_name("pottery-semaphore")
            .on_thread_start(crate::signals::keep_off_this_thread)
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("tokio: {e}")))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("pottery-semaphore-epoch".into())
            .spawn(move || {
                crate::signals::keep_off_this_thread();
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Runtime(format!("epoch thread: {e}")))?;
        Ok(Runtime { engine, pre, pre_sync, tokio, options, loaded_from_cache })
    }

    /// Runs `fut` on this runtime's threads and returns its output to a future on any executor.
    pub(crate) async fn run<F>(&self, fut: F) -> Result<F::Output, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tokio.spawn(fut).await.map_err(|e| Error::Runtime(format!("task failed: {e}")))
    }
}

/// Deserializes the cached artifact when it matches this engine and component; otherwise
/// compiles and writes the cache (best effort: an unwritable cache only costs time).
fn load_component(engine: &Engine, cache_dir: Option<&PathBuf>) -> Result<(Component, bool), Error> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    COMPONENT.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let name = format!("component-{:016x}.cwasm", hasher.finish());
    if let Some(bytes) = cache_dir.and_then(|dir| cache::read(dir, &name)) {
        // SAFETY: the bytes were written by `Component::serialize` below for this exact engine
        // configuration and component (both are in its name), read from a file and directory
        // only this user may write (see `cache`); wasmtime re-checks the header.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => return Ok((component, true)),
            Err(_) => cache::remove(cache_dir.expect("read from it"), &name),
        }
    }
    let component = Component::new(engine, COMPONENT).map_err(|e| Error::Runtime(format!("compiling the component: {e:#}")))?;
    if let (Some(dir), Ok(bytes)) = (cache_dir, component.serialize()) {
        cache::write(dir, &name, &bytes);
    }
    Ok((component, false))
}

/// The on-disk cache of compiled components. The artifact is native code, run outside the
/// sandbox: it is read and written only in a directory and as a file that belong to this user
/// and that no one else may write. The directory is opened once, not followed if it is a
/// symbolic link, and checked through that descriptor, and the file is reached through it: a
/// parent directory others may write to cannot swap either between the check and the use.
#[allow(unsafe_code)] // libc: openat, renameat, unlinkat on a directory we opened
mod cache {
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::Path;

    /// The directory, opened and checked; `None` if it is not there, a symbolic link, or not
    /// private to this user.
    fn open_dir(dir: &Path) -> Option<File> {
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(dir).ok()?;
        opened.metadata().ok().filter(super::owned_and_private).map(|_| opened)
    }

    /// Opens `name` in `dir` with `flags` (never following a symbolic link) and `mode`.
    fn open_in(dir: &File, name: &str, flags: libc::c_int, mode: libc::c_uint) -> Option<File> {
        let name = CString::new(name).ok()?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name; the new descriptor,
        // if any, is ours alone.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode) };
        // SAFETY: `fd` was just opened and belongs to nothing else.
        (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
    }

    /// The artifact `name` in `dir`, if both are private to this user and it is a plain file.
    pub(super) fn read(dir: &Path, name: &str) -> Option<Vec<u8>> {
        let dir = open_dir(dir)?;
        let mut file = open_in(&dir, name, libc::O_RDONLY, 0)?;
        let meta = file.metadata().ok().filter(|m| m.is_file() && super::owned_and_private(m))?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Removes the artifact `name` (one that did not deserialize).
    pub(super) fn remove(dir: &Path, name: &str) {
        let (Some(dir), Ok(name)) = (open_dir(dir), CString::new(name)) else { return };
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    }

    /// Writes the artifact `name` into `dir` (created private, whatever the umask, if it is not
    /// there), under a temporary name first so that no reader sees half of it.
    pub(super) fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        let Some(dir) = open_dir(dir) else { return };
        // Unique to this write, even across processes of one pid (containers sharing a cache):
        // a name taken (a file left by a killed writer) only means this write is skipped.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = format!("{name}.tmp{}.{n}.{nanos}", std::process::id());
        let (Ok(from), Ok(to)) = (CString::new(tmp.as_str()), CString::new(name)) else { return };
        let Some(mut file) = open_in(&dir, &tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) else { return };
        // SAFETY: the same valid directory descriptor on both sides, NUL-terminated names.
        let renamed = file.write_all(bytes).is_ok() && unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) } == 0;
        if !renamed {
            // SAFETY: as above.
            unsafe { libc::unlinkat(dir.as_raw_fd(), from.as_ptr(), 0) };
        }
    }
}

fn owned_and_private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    meta.uid() == me && meta.mode() & 0o022 == 0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The cache is read through the directory itself only: not through a symbolic link to it
    /// (which a parent directory others may write to could swap for one to theirs between a
    /// check and the read), and not from a directory others may write to.
    #[test]
    fn the_cache_is_read_only_from_a_private_directory_reached_directly() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("pottery-semaphore-cache-test-{}", std::process::id()));
        let (dir, link) = (base.join("cache"), base.join("link"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        super::cache::write(&dir, "artifact", b"bytes");
        assert_eq!(super::cache::read(&dir, "artifact").as_deref(), Some(&b"bytes"[..]));
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(super::cache::read(&link, "artifact"), None, "read through a symbolic link");
        super::cache::write(&link, "other", b"bytes");
        assert!(!dir.join("other").exists(), "written through a symbolic link");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(super::cache::read(&dir, "artifact"), None, "read from a group-writable directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(dir.join("artifact"), dir.join("linked")).unwrap();
        assert_eq!(super::cache::read(&dir, "linked"), None, "read a symbolic link to an artifact");
        let _ = std::fs::remove_dir_all(&base);
    }
    use std::sync::Arc;
    use std::time::Duration;

    /// Work moved off the executor (the first runtime start) leaves it running other tasks.
    #[test]
    fn work_off_thread_leaves_the_executor_free() {
        let executor = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        executor.block_on(async {
            let ticks = Arc::new(AtomicU64::new(0));
            let counted = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
            let out = super::off_thread("test", || {
                std::thread::sleep(Duration::from_millis(200));
                7
            })
            .await;
            assert_eq!(out.expect("result"), 7);
            assert!(ticks.load(Ordering::Relaxed) >= 20, "the executor stood still: {} ticks", ticks.load(Ordering::Relaxed));
        });
    }
}
