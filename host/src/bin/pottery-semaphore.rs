//! `pottery-semaphore`: the semaphore for shells, cron jobs and operators.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use pottery_semaphore_host::{redacted_url, Error, Options, Semaphore, Status};

const USAGE: &str = "usage: pottery-semaphore [--redis URL]... [--cluster] <command>

commands:
  run --key K [--permits N] [--timeout S] [--lease S] [--keep-running] -- CMD [ARGS...]
        wait for a permit, run CMD while refreshing the lease, release, exit with CMD's status
  status --key K [--json]
        capacity, available permits, holders (token, holder, lease left) and waiters in order
  set-permits --key K N     set the number of permits (permits in use are never taken away)
  add-permits --key K N     add N permits (negative removes)

--redis URL   redis://[user:password@]host:port[/db], rediss://... (TLS) or unix:///path;
              default $REDIS_URL (the place for a password: others can read a command line),
              else redis://127.0.0.1:6379. Repeat it for independent
              masters: each permit is then a slot held on a majority of them (Redlock mode)
--cluster     the --redis URLs are seed nodes of one Redis Cluster
--permits N   permits when `run` creates the semaphore (default 1; an existing one keeps its own)
--timeout S   give up after S seconds of waiting (exit status 75)
--lease S     lease of the permit in seconds (default 10), refreshed while CMD runs; the
              other commands check for a restart of Redis with it: give them the jobs' lease
--keep-running  when the permit is lost while CMD runs (its lease ended, Redis out of reach,
              another holder released it), only warn; by default CMD gets SIGTERM, then
              SIGKILL 10 s later (a lease that cannot be extended: SIGTERM before it ends,
              SIGKILL at its end), and the exit status is 76

exit status: CMD's own (128+N when killed by signal N); 75 timed out waiting; 76 the permit
             was lost while CMD ran; 128+N interrupted by signal N while waiting (for SIGINT,
             SIGQUIT, SIGTERM and SIGHUP, there and when CMD died of one, the CLI dies of the
             same signal once the permit is back, as shells expect to stop a loop); 64 usage;
             69 Redis unreachable; 77 authentication refused; 74 output not written; 70 other
             errors; 127 CMD not found, 126 not executable";

/// sysexits.h codes, so scripts can tell outcomes apart.
const EX_USAGE: u8 = 64;
const EX_SOFTWARE: u8 = 70;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;
/// The permit was lost while the command ran (EX_PROTOCOL's number, for want of a closer one).
const EX_LOST: u8 = 76;
const EX_NOPERM: u8 = 77;
/// How long a command stopped for a lost permit has between SIGTERM and SIGKILL.
const LOST_GRACE: Duration = Duration::from_secs(10);

/// `eprint!` that ignores a failing stderr (a terminal that hung up answers EIO) instead of
/// panicking, which would skip the clean-up that follows (leaving the queue, stopping the command).
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Debug, Default)]
struct Args {
    redis: Vec<String>,
    cluster: bool,
    command: String,
    key: Option<String>,
    permits: Option<i64>,
    timeout: Option<f64>,
    lease: Option<f64>,
    keep_running: bool,
    json: bool,
    positional: Vec<String>,
    /// The command and its arguments, as given (not necessarily UTF-8).
    program: Vec<OsString>,
}

#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: EX_USAGE, message: format!("{}\n\n{USAGE}", message.into()) }
}

/// What the user should do next, per error.
fn failure(e: Error, url: &str) -> Failure {
    let (code, hint) = match &e {
        Error::Unreachable(_) => (EX_UNAVAILABLE, format!("is Redis running at {url}? Set --redis or REDIS_URL.")),
        Error::Quorum(_) => (EX_UNAVAILABLE, format!("too many of the masters ({url}) failed to form a majority; start them or check the URLs.")),
        Error::Auth(_) => (EX_NOPERM, "check the user and password in the URL (redis://user:password@host:port).".into()),
        Error::InvalidArgument(m) if m.starts_with("no semaphore") => {
            (EX_USAGE, "create it with `set-permits` or `run --permits N`.".into())
        }
        // Not the command line's fault: the semaphore (an operator's set-permits 0, say) has
        // fewer permits than `run` asks for.
        Error::InvalidArgument(m) if m.starts_with("n exceeds the capacity") => {
            (EX_UNAVAILABLE, "the semaphore has fewer permits than asked for: raise them with `set-permits` or `add-permits`.".into())
        }
        Error::InvalidArgument(_) => (EX_USAGE, "see --help.".into()),
        Error::WrongType(_) => (EX_SOFTWARE, "another program uses this key; pick another --key.".into()),
        _ => (EX_SOFTWARE, String::new()),
    };
    Failure { code, message: format!("{e}\n{hint}").trim_end().to_string() }
}

fn parse(raw: Vec<OsString>) -> Result<Args, Failure> {
    let mut args = Args::default();
    let mut it = raw.into_iter();
    // Arguments echoed in errors go through `redacted_url`: a misplaced URL may carry a password.
    let text = |a: OsString| a.into_string().map_err(|a| usage(format!("not UTF-8: {}", redacted_url(&a.to_string_lossy()))));
    let value = |it: &mut std::vec::IntoIter<OsString>, flag: &str| it.next().ok_or_else(|| usage(format!("{flag} needs a value"))).and_then(text);
    let number = |s: String, flag: &str| s.parse::<f64>().map_err(|_| usage(format!("{flag}: not a number: {}", redacted_url(&s))));
    while let Some(arg) = it.next() {
        if arg == "--" {
            args.program = it.by_ref().collect();
            break;
        }
        let arg = text(arg)?;
        match arg.as_str() {
            "-h" | "--help" => return Err(Failure { code: 0, message: USAGE.into() }),
            "--redis" => args.redis.push(value(&mut it, "--redis")?),
            // Given twice is a mistake too: which one was meant?
            flag @ ("--key" | "--permits" | "--timeout" | "--lease")
                if match flag {
                    "--key" => args.key.is_some(),
                    "--permits" => args.permits.is_some(),
                    "--timeout" => args.timeout.is_some(),
                    _ => args.lease.is_some(),
                } =>
            {
                return Err(usage(format!("{flag} given twice")));
            }
            "--key" => args.key = Some(value(&mut it, "--key")?),
            "--permits" => {
                let v = value(&mut it, "--permits")?;
                args.permits = Some(v.parse().map_err(|_| usage(format!("--permits: not a whole number: {}", redacted_url(&v))))?);
            }
            "--timeout" => args.timeout = Some(number(value(&mut it, "--timeout")?, "--timeout")?),
            "--lease" => args.lease = Some(number(value(&mut it, "--lease")?, "--lease")?),
            "--json" => args.json = true,
            "--keep-running" => args.keep_running = true,
            "--cluster" => args.cluster = true,
            flag if flag.starts_with("--") => return Err(usage(format!("unknown option {}", redacted_url(flag)))),
            _ if args.command.is_empty() => args.command = arg,
            _ => args.positional.push(arg),
        }
    }
    // What a command does not use is a mistake to point out, not to ignore.
    let only = |flag: &str, given: bool, command: &str| {
        if given && args.command != command { Err(usage(format!("{flag} is for {command} only"))) } else { Ok(()) }
    };
    only("--timeout", args.timeout.is_some(), "run")?;
    only("--permits", args.permits.is_some(), "run")?;
    only("--", !args.program.is_empty(), "run")?;
    only("--keep-running", args.keep_running, "run")?;
    only("--json", args.json, "status")?;
    let extra = |from: usize| args.positional.get(from).map_or(Ok(()), |arg| Err(usage(format!("unexpected {}", redacted_url(arg)))));
    match args.command.as_str() {
        "" => Err(usage("no command given")),
        "run" if !args.positional.is_empty() => Err(usage(format!("unexpected {}: the command goes after --", redacted_url(&args.positional[0])))),
        "status" => extra(0).map(|()| args),
        "set-permits" | "add-permits" => extra(1).map(|()| args),
        "run" => Ok(args),
        other => Err(usage(format!("unknown command {}", redacted_url(other)))),
    }
}

/// The options, and the masters' URLs (passwords hidden) for messages.
fn options(args: &Args) -> Result<(Options, String), Failure> {
    let urls = match args.redis.as_slice() {
        [] => vec![match std::env::var("REDIS_URL") {
            Ok(url) => url,
            Err(std::env::VarError::NotPresent) => "redis://127.0.0.1:6379".into(),
            Err(std::env::VarError::NotUnicode(_)) => return Err(usage("$REDIS_URL is not valid UTF-8")),
        }],
        several => several.to_vec(),
    };
    let shown = urls.iter().map(|u| redacted_url(u)).collect::<Vec<_>>().join(", ");
    let key = args.key.clone().ok_or_else(|| usage("--key is required"))?;
    // Refused before anything is created: a semaphore of no permits would stay so in Redis.
    if args.permits.is_some_and(|n| n < 1) {
        return Err(usage("--permits must be at least 1"));
    }
    if args.redis.iter().any(|url| redacted_url(url) != *url) {
        warn!("pottery-semaphore: a password given with --redis is readable by every user of this machine while this runs; set $REDIS_URL instead\n");
    }
    // Several masters: a majority failing is an error (exit 69), not a wait that never ends.
    let mut options =
        Options::with_masters(urls, key).cluster(args.cluster).permits(args.permits.unwrap_or(1)).raise_on_redis_errors(true);
    if let Some(lease) = args.lease {
        let lease = Duration::try_from_secs_f64(lease).ok().filter(|l| !l.is_zero());
        options = options.lease(lease.ok_or_else(|| usage("--lease must be a positive number of seconds"))?);
    }
    Ok((options, shown))
}

/// Set when a line for stdout could not be written for another reason than a reader that went
/// away: the exit status then says so (74) rather than success.
static OUTPUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The signal the CLI dies of once everything is settled (see `die_of`), 0 for none.
static DIE_OF: AtomicI32 = AtomicI32::new(0);

/// 128 + `sig`, the shell's status for a death by `sig`; noted for `die_of` when it is a signal
/// a user or a shell sends to stop a job.
fn ended_by(sig: i32) -> u8 {
    if [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP].contains(&sig) {
        DIE_OF.store(sig, Ordering::SeqCst);
    }
    128u8.saturating_add(sig as u8)
}

/// Ends the process by `sig`, as if it had not been handled: a shell stops a loop or script only
/// when its foreground child died of the SIGINT (or SIGQUIT) the terminal sent, not when it
/// exited 130 ("wait and cooperative exit"). Returns only if the signal did not end it.
#[allow(unsafe_code)]
fn die_of(sig: i32) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: plain libc calls on valid, zeroed or filled structs; the process is about to end.
    unsafe {
        if sig == libc::SIGQUIT {
            // Its default action dumps core: nothing of this process is worth a core file.
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
        }
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// `println!` that ignores a closed stdout (`status | head`) instead of panicking, and notes
/// any other failure (a full disk) in [`OUTPUT_FAILED`].
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                OUTPUT_FAILED.store(true, Ordering::Relaxed);
            }
        }
    }};
}

fn print_status(key: &str, s: &Status, json: bool) {
    if json {
        let esc = |v: &str| {
            v.chars()
                .map(|c| match c {
                    '"' => "\\\"".to_string(),
                    '\\' => "\\\\".to_string(),
                    c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
                    c => c.to_string(),
                })
                .collect::<String>()
        };
        let holders: Vec<String> = s
            .holders
            .iter()
            // Tokens and ids as strings: several-master tokens exceed 2^53, which a reader that
            // parses JSON numbers as doubles (JavaScript, jq 1.6) would round.
            .map(|h| format!(r#"{{"token":"{}","holder":"{}","ttl_ms":{}}}"#, h.token, esc(&h.holder), h.ttl_ms))
            .collect();
        let waiters: Vec<String> =
            s.waiters.iter().map(|w| format!(r#"{{"id":"{}","n":{},"holder":"{}"}}"#, w.id, w.n, esc(&w.holder))).collect();
        say!(
            r#"{{"key":"{}","initial":{},"capacity":{},"available":{},"holders":[{}],"waiters":[{}]}}"#,
            esc(key),
            s.initial,
            s.capacity,
            s.available,
            holders.join(","),
            waiters.join(",")
        );
        return;
    }
    say!("semaphore {key:?}: {} of {} permits available (initial value {})", s.available, s.capacity, s.initial);
    say!("holders ({}):", s.holders.len());
    for h in &s.holders {
        say!("  token {:>20}  holder {}  lease left {:.1} s", h.token, h.holder, h.ttl_ms as f64 / 1000.0);
    }
    say!("waiters ({}), first served first:", s.waiters.len());
    for (i, w) in s.waiters.iter().enumerate() {
        say!("  {:>3}. waiter {}  wants {}  holder {}", i + 1, w.id, w.n, w.holder);
    }
}

/// Shows the caller's place in the queue while it waits (terminals only).
async fn show_progress(sem: Semaphore, started: Instant) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let place = match sem.status().await {
            Ok(s) => match s.waiters.iter().position(|w| w.holder == sem.holder_id()) {
                Some(i) => format!("position {} of {} in the queue", i + 1, s.waiters.len()),
                // Several masters keep no queue: say how busy the semaphore is instead.
                None if s.waiters.is_empty() && s.available == 0 => format!("all {} permits held", s.capacity),
                None => "about to be served".into(),
            },
            Err(_) => "Redis not answering".into(),
        };
        warn!("\r\x1b[Kwaiting for a permit of {:?}: {place}, {:.1} s", sem.key(), started.elapsed().as_secs_f64());
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number touches no memory.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// True when `signal` is ignored (SIG_IGN), as `nohup` leaves SIGHUP, and a shell SIGINT and
/// SIGQUIT for a background job. Such a signal is left alone: ignored here and, across exec, in
/// the command (a handler of ours would be reset to the default action there).
#[allow(unsafe_code)]
fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction(2) with no new action only writes the current one into a zeroed struct
    // of ours.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_IGN
    }
}

/// The `si_code` of each handled signal's latest delivery, stored by an action registered
/// before tokio's (signal-hook-registry runs a signal's actions in the order registered), so it
/// is there when tokio's stream yields the signal.
static ORIGIN: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];

#[allow(unsafe_code)]
fn record_origin(signal: i32) -> std::io::Result<()> {
    let slot = usize::try_from(signal).ok().filter(|s| *s < ORIGIN.len()).ok_or_else(|| std::io::Error::other("signal number out of range"))?;
    // SAFETY: the action runs inside the signal handler; it reads the monotonic clock and
    // stores into atomics, all async-signal-safe.
    unsafe {
        signal_hook_registry::register_sigaction(signal, move |info: &libc::siginfo_t| {
            ORIGIN[slot].store(info.si_code, Ordering::Relaxed);
            ARRIVED_MS[slot].store(monotonic_ms(), Ordering::Relaxed);
        })
    }
    .map(drop)
}

/// When each handled signal last arrived ([`monotonic_ms`]), beside [`ORIGIN`].
static ARRIVED_MS: [std::sync::atomic::AtomicU64; 32] = [const { std::sync::atomic::AtomicU64::new(0) }; 32];

/// CLOCK_MONOTONIC in ms: readable inside a signal handler, unlike `Instant::now` by contract.
#[allow(unsafe_code)]
fn monotonic_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1000) + now.tv_nsec as u64 / 1_000_000
}

/// Whether `signal` last arrived before `ms` ([`monotonic_ms`]).
fn arrived_before(signal: i32, ms: u64) -> bool {
    ARRIVED_MS.get(signal as usize).is_some_and(|at| at.load(Ordering::Relaxed) < ms)
}

/// True when `signal` came from the terminal's keyboard within `SAME_KEYPRESS` (see
/// [`sent_by_the_terminal`]): the keypress that ended the command, which reached the rest of
/// this process group with it.
fn the_terminal_just_sent(signal: i32) -> bool {
    sent_by_the_terminal(signal)
        && ARRIVED_MS.get(signal as usize).is_some_and(|at| monotonic_ms().saturating_sub(at.load(Ordering::Relaxed)) < SAME_KEYPRESS.as_millis() as u64)
}

/// True when the terminal sent the latest `signal` from its keyboard (Ctrl-C, Ctrl-\): the
/// kernel sends those to the terminal's whole foreground process group, the command included,
/// so forwarding would deliver it twice. A signal sent with kill(2) is forwarded, whoever it
/// came from, and so is a hang-up: the kernel may send that to the session leader alone.
#[cfg(target_os = "linux")]
fn sent_by_the_terminal(signal: i32) -> bool {
    (signal == libc::SIGINT || signal == libc::SIGQUIT)
        && ORIGIN.get(signal as usize).is_some_and(|code| code.load(Ordering::Relaxed) == libc::SI_KERNEL)
}

/// Where `si_code` does not tell a terminal's signals apart: SIGINT while this process group is
/// the terminal's foreground one (asked of stdin, stdout and stderr: any may be redirected).
#[cfg(not(target_os = "linux"))]
#[allow(unsafe_code)]
fn sent_by_the_terminal(signal: i32) -> bool {
    // SAFETY: tcgetpgrp(3) and getpgrp(2) only read process state; a descriptor that is not a
    // terminal makes tcgetpgrp fail with -1, which no process group equals.
    signal == libc::SIGINT && (0..3).any(|fd| unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() })
}

/// After a wait was given up: the handle leaves the queue, and gives back a permit granted just
/// then, on the library's threads. Exiting at once could cut that short (a dead waiter would
/// hold up the queue behind it for seconds), so wait, briefly, until neither shows.
async fn settle_after_cancel(sem: &Semaphore) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match sem.status().await {
            Ok(s) if !s.waiters.iter().any(|w| w.holder == sem.holder_id()) && !s.holders.iter().any(|h| h.holder == sem.holder_id()) => return,
            Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn run(args: Args) -> Result<u8, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    if args.program.is_empty() {
        return Err(usage("run needs a command after --"));
    }
    let timeout = args
        .timeout
        .map(|t| if t.is_finite() && t >= 0.0 { Ok(t) } else { Err(usage("--timeout must be a number of seconds >= 0 (leave it out to wait as long as it takes)")) })
        .transpose()?;
    let (options, url) = options(&args)?;
    // From here on every handled signal is seen: while waiting it ends the wait, once the
    // command runs it is forwarded to it.
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    let mut signals = kinds
        .iter()
        .filter(|k| !ignored(k.as_raw_value()))
        .map(|k| record_origin(k.as_raw_value()).and_then(|()| signal(*k)).map(|s| (k.as_raw_value(), s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure { code: EX_SOFTWARE, message: e.to_string() })?;
    let sem = Semaphore::open(options).await.map_err(|e| failure(e, &url))?;
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal().then(|| tokio::spawn(show_progress(sem.clone(), started)));
    // A signal that comes with the grant wins: the user interrupted, and the grant goes back.
    let acquired = tokio::select! {
        biased;
        Some(sig) = first_signal(&mut signals) => Err(sig),
        r = sem.acquire_n(1, true, timeout) => Ok(r),
    };
    if let Some(p) = progress {
        p.abort();
        warn!("\r\x1b[K");
    }
    let permits = match acquired {
        Err(sig) => {
            settle_after_cancel(&sem).await;
            return Ok(ended_by(sig));
        }
        Ok(Ok(p)) if p.is_empty() => {
            return Err(Failure {
                code: EX_TEMPFAIL,
                message: format!("timed out after {:.1} s waiting for a permit of {:?}", started.elapsed().as_secs_f64(), sem.key()),
            });
        }
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(failure(e, &url)),
    };
    let tokens: Vec<u64> = permits.iter().map(|p| p.token).collect();
    adopt_orphans();
    // Children this process had before (it was exec'd by a shell with jobs running) are not the
    // command's.
    let before = children();
    // A terminal's signal that came before this reached the waiting CLI only: see watch_command.
    let spawning_ms = monotonic_ms();
    let mut command = tokio::process::Command::new(&args.program[0]);
    command.args(&args.program[1..]).env("POTTERY_SEMAPHORE_TOKEN", permits[0].token.to_string());
    if !args.keep_running {
        killed_with_this_process(&mut command);
    }
    let child = command.spawn();
    let (status, lost) = match child {
        Ok(mut child) => watch_command(&mut child, &before, spawning_ms, &sem, &mut signals, args.keep_running).await,
        Err(e) => {
            let _ = sem.release_permits(tokens).await;
            let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
            return Err(Failure { code, message: format!("cannot run {}: {e}", args.program[0].to_string_lossy()) });
        }
    };
    let released = sem.release_permits(tokens).await;
    if let Err(e) = released {
        warn!("pottery-semaphore: could not release the permit ({e}); it ends with its lease\n");
    }
    if lost && !args.keep_running {
        return Ok(EX_LOST);
    }
    Ok(exit_code(status))
}

/// Waits for the command and for what it left running (see `adopt_orphans`), forwarding
/// signals to the command; when the permit is lost, stops both (SIGTERM, then SIGKILL after
/// `LOST_GRACE`) unless `keep_running`. A lease that refreshes fail to extend stops them before
/// it ends, when another process may be granted the permit: SIGTERM a quarter of a lease (at
/// most `LOST_GRACE`) before once a refresh failed (an eighth before while none has answered),
/// SIGKILL at its end (by this process's clock, with a margin) to the command and all it
/// started. Returns the command's status and whether the permit was lost (or the command
/// stopped for it). `before`: children that are not the command's; `spawning_ms`: when it was
/// about to start ([`monotonic_ms`]).
async fn watch_command(
    child: &mut tokio::process::Child,
    before: &[u32],
    spawning_ms: u64,
    sem: &Semaphore,
    signals: &mut [(i32, tokio::signal::unix::Signal)],
    keep_running: bool,
) -> (Option<std::process::ExitStatus>, bool) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id().unwrap_or(0);
    let (mut lost, mut kill_at) = (false, None::<tokio::time::Instant>);
    // Whether the command is being stopped because the lease could not be extended in time (a
    // loss too: the permit may be another's once the lease ends).
    let mut lease_running_out = false;
    let lease_margin = (sem.lease() / 4).min(LOST_GRACE);
    // What the command left running, as the poll below finds it, without reaping.
    let orphans_now = || -> Vec<u32> { children().into_iter().filter(|c| *c != pid && !before.contains(c) && in_our_session(*c)).collect() };
    // The command's status once it has ended, and when; whether a signal since asked to stop
    // what it left running.
    let (mut ended, mut ended_at, mut asked_to_stop) = (None, Instant::now(), false);
    let mut orphans_get = PassedOn::default();
    loop {
        let kill_due = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let poll = tokio::time::sleep(if ended.is_some() { ORPHAN_POLL } else { ZOMBIE_POLL });
        // The lease as last extended: once it is this close to its end, refreshes have been
        // failing, and from its end another process may be granted the permit.
        let lease_ends = if keep_running || lost || lease_running_out { None } else { sem.valid_until() };
        let lease_check = async {
            match lease_ends {
                // Within the margin, looked at again and again until a refresh moves it on.
                Some(at) => {
                    let look_at = at.checked_sub(lease_margin).filter(|t| *t > Instant::now()).unwrap_or_else(|| Instant::now() + LEASE_LOOK);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(look_at)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait(), if ended.is_none() => {
                let status = status.ok();
                // Ended by a request to stop (forwarded, or the terminal's): what it left
                // running was meant to get it too. (Not a crash's or a broken pipe's.)
                let stopped_by = status.and_then(|s| s.signal()).filter(|s| [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT].contains(s));
                if let (None, Some(sig)) = (orphans_get.signal, stopped_by) {
                    orphans_get.set(sig);
                    // The terminal's keypress reached those in this process group already: a
                    // second one would break into their clean-up.
                    orphans_get.spare_our_group = the_terminal_just_sent(sig);
                }
                (ended, ended_at) = (Some(status), Instant::now());
            }
            () = poll => {
                // Every adopted child that ended is reaped (daemons the command started too),
                // so none stays a zombie; the command's own are waited for. A child that ended
                // after the listing handed its own children to this process unlisted: look
                // again until a listing reaps nothing.
                let alive = loop {
                    let listed: Vec<u32> = children().into_iter().filter(|c| *c != pid).collect();
                    let count = listed.len();
                    let alive = reap(listed);
                    if alive.len() == count {
                        break alive;
                    }
                };
                let orphans: Vec<u32> = alive.into_iter().filter(|c| !before.contains(c) && in_our_session(*c)).collect();
                if ended.is_some() && orphans.is_empty() {
                    break;
                }
                orphans_get.deliver(orphans);
            }
            Some(sig) = first_signal(signals) => {
                if ended.is_some() {
                    // Only what the command left running holds the permit: a signal stops it
                    // (one it ignores, as a shell's background job does SIGINT, too); not the
                    // terminal's that ended the command, seen only after its end, unless some
                    // of it runs outside this process group, which the terminal did not reach.
                    let keypress_seen = ended_at.elapsed() < SAME_KEYPRESS && sent_by_the_terminal(sig);
                    if !keypress_seen || children().into_iter().any(|c| !in_our_process_group(c)) {
                        orphans_get.set(if asked_to_stop { libc::SIGKILL } else { libc::SIGTERM });
                        asked_to_stop = true;
                    }
                } else if !sent_by_the_terminal(sig) || !in_our_process_group(pid) || arrived_before(sig, spawning_ms) {
                    // The terminal's reaches the command itself only in this process group
                    // (GNU `timeout` without --foreground, for one, leaves it), and only once it
                    // runs (a keypress just as the permit came, seen only now, did not).
                    send_signal(pid, sig);
                }
            }
            () = lease_check => {
                // Woken for the end as it stood: a refresh since may have moved it on. Stopped a
                // quarter of a lease before the end once a refresh failed; half that when none
                // has failed yet (one still waiting for an answer from a server gone silent, or
                // a first refresh that is slow to come: a grant from a wake-up push is dated
                // from the script before the pop).
                let left = sem.valid_until().map(|at| (at, at.saturating_duration_since(Instant::now())));
                if let Some((at, left)) = left.filter(|(_, left)| *left <= lease_margin / 2 || (*left <= lease_margin && sem.refresh_failing())) {
                    lease_running_out = true;
                    warn!("pottery-semaphore: the lease could not be extended and ends in {:.1} s; stopping the command\n", left.as_secs_f64());
                    if ended.is_none() {
                        send_signal(pid, libc::SIGTERM);
                    }
                    orphans_get.set(libc::SIGTERM);
                    orphans_get.deliver(orphans_now());
                    // SIGKILL by the lease's end, before anyone else can be granted the permit.
                    let at = tokio::time::Instant::from_std(at);
                    kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                }
            }
            () = sem.lost(), if !lost => {
                lost = true;
                let what = if keep_running { "the command keeps running (--keep-running)" } else { "stopping the command" };
                if !keep_running {
                    if ended.is_none() && !lease_running_out {
                        send_signal(pid, libc::SIGTERM);
                    }
                    if !lease_running_out {
                        orphans_get.set(libc::SIGTERM);
                    }
                    let grace_ends = tokio::time::Instant::now() + LOST_GRACE;
                    kill_at = Some(kill_at.map_or(grace_ends, |k| k.min(grace_ends)));
                }
                report_lost(sem, sem.take_lost(), what);
            }
            () = kill_due => {
                // What the command started goes with it, now, not at the next look for orphans:
                // by then the permit may be another's.
                let started: Vec<u32> = if ended.is_none() && pid != 0 { descendants(pid) } else { Vec::new() };
                if ended.is_none() {
                    send_signal(pid, libc::SIGKILL);
                }
                for descendant in started.into_iter().filter(|d| in_our_session(*d)) {
                    send_signal(descendant, libc::SIGKILL);
                }
                orphans_get.set(libc::SIGKILL);
                orphans_get.deliver(orphans_now());
                kill_at = None;
            }
        }
    }
    // A loss that came with the command's end counts: the command ran without it.
    let late = sem.take_lost();
    if !lost && !late.is_empty() {
        lost = true;
        report_lost(sem, late, "the command had ended");
    }
    (ended.flatten(), lost || lease_running_out)
}

/// The signal the command's orphans get (also those adopted after it was chosen), and those
/// that have had it.
#[derive(Default)]
struct PassedOn {
    signal: Option<i32>,
    reached: std::collections::BTreeSet<u32>,
    /// Not to those in this process group, which had it from the terminal.
    spare_our_group: bool,
}

impl PassedOn {
    /// From now on orphans get `signal`, those that had another one too.
    fn set(&mut self, signal: i32) {
        self.signal = Some(signal);
        self.reached.clear();
        self.spare_our_group = false;
    }

    /// Sends the signal, if any, to those of `orphans` that have not had it.
    fn deliver(&mut self, orphans: Vec<u32>) {
        let Some(signal) = self.signal else { return };
        for orphan in orphans {
            if self.reached.insert(orphan) && !(self.spare_our_group && in_our_process_group(orphan)) {
                send_signal(orphan, signal);
            }
        }
    }
}

/// How often, once the command has ended, the CLI looks for what it left running; and, while
/// it runs, for adopted children that ended (zombies hold process ids until reaped).
const ORPHAN_POLL: Duration = Duration::from_millis(50);
/// How often a lease within its stopping margin is looked at again (see `watch_command`).
const LEASE_LOOK: Duration = Duration::from_millis(20);
const ZOMBIE_POLL: Duration = Duration::from_secs(1);
/// How late after the command's end a signal from the terminal may come and still be the one
/// that ended it (it reaches the whole foreground group at once).
const SAME_KEYPRESS: Duration = Duration::from_millis(200);

/// Makes this process the one the command's orphans are handed to (Linux): a shell that a
/// signal ends leaves its children running, still doing the work the permit covers, so the
/// permit is released only once they have ended too. (A process that starts a session of its
/// own, as a daemon does, is not the command's to wait for: see `in_our_session`.) Elsewhere
/// orphans go to init, as before.
#[allow(unsafe_code)]
fn adopt_orphans() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Linux: the command is killed (SIGKILL) if this process dies first (SIGKILL, the OOM killer,
/// a signal it does not handle), as the permit is refreshed only while this process lives: once
/// its lease ends another may hold it, and the command must not work on beside that holder. The
/// command's own children are not covered, nor a command that changes its user or group (a set-user-ID program, `runuser`: the kernel clears the guard),
/// nor other systems. Not with --keep-running, whose command outlives the permit by choice.
#[allow(unsafe_code)]
fn killed_with_this_process(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure makes only async-signal-safe calls (prctl,
        // getppid) and allocates nothing but the error it may return. The death signal follows
        // the thread that forked: this one, the current-thread runtime's, lives as long as the
        // process.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // This process died before the guard was set: the command must not start.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("pottery-semaphore ended"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Reaps those of `children` that have ended; returns those that still run.
#[allow(unsafe_code)]
fn reap(mut children: Vec<u32>) -> Vec<u32> {
    // SAFETY: waitpid on a child of ours, without a status pointer, not blocking.
    children.retain(|pid| unsafe { libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) } == 0);
    children
}

/// Whether `pid` is in this process's session, as the command and what it starts are unless
/// they start one of their own (daemons do).
#[allow(unsafe_code)]
fn in_our_session(pid: u32) -> bool {
    // SAFETY: getsid takes and returns plain integers.
    unsafe { libc::getsid(pid as libc::pid_t) == libc::getsid(0) }
}

/// Whether `pid` is in this process's process group, which a terminal signals as a whole.
#[allow(unsafe_code)]
fn in_our_process_group(pid: u32) -> bool {
    // SAFETY: getpgid and getpgrp take and return plain integers.
    unsafe { libc::getpgid(pid as libc::pid_t) == libc::getpgrp() }
}

/// This process's children (the command, and the orphans it adopted), from /proc (Linux).
fn children() -> Vec<u32> {
    let me = std::process::id();
    processes().into_iter().filter(|(_, parent)| *parent == me).map(|(pid, _)| pid).collect()
}

/// Every process with its parent's pid (from /proc).
fn processes() -> Vec<(u32, u32)> {
    let parent = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (name) state ppid ...", the name possibly holding spaces and parentheses.
        stat.get(stat.rfind(')')? + 2..)?.split(' ').nth(1)?.parse::<u32>().ok()
    };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter_map(|pid| Some((pid, parent(pid)?))).collect()
}

/// `root`'s children, theirs, and so on.
fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// Says on stderr that these permits were lost, and what follows.
fn report_lost(sem: &Semaphore, lost: Vec<pottery_semaphore_host::Permit>, what: &str) {
    for p in lost {
        warn!(
            "pottery-semaphore: lost the permit (token {}) of {:?}: its lease ended, Redis was out of reach or another holder released it; {what}\n",
            p.token,
            sem.key()
        );
    }
}

/// The first signal any of `streams` delivers.
async fn first_signal(streams: &mut [(i32, tokio::signal::unix::Signal)]) -> Option<i32> {
    std::future::poll_fn(|cx| {
        for (raw, stream) in streams.iter_mut() {
            if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                return std::task::Poll::Ready(Some(*raw));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn exit_code(status: Option<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => ended_by(sig),
            _ => EX_SOFTWARE,
        },
        None => EX_SOFTWARE,
    }
}

async fn operate(args: Args) -> Result<u8, Failure> {
    let (options, url) = options(&args)?;
    let key = options.key.clone();
    let amount = || -> Result<i64, Failure> {
        let v = args.positional.first().ok_or_else(|| usage(format!("{} needs a number", args.command)))?;
        v.parse().map_err(|_| usage(format!("not a whole number: {}", redacted_url(v))))
    };
    let open = |options: Options| async { Semaphore::open(options.create(false)).await.map_err(|e| failure(e, &url)) };
    match args.command.as_str() {
        "status" => {
            let status = open(options).await?.status().await.map_err(|e| failure(e, &url))?;
            print_status(&key, &status, args.json);
        }
        "set-permits" => {
            let n = amount()?;
            // Checked before opening, which would create a missing semaphore.
            if n < 0 {
                return Err(usage(format!("the number of permits must be >= 0, not {n}")));
            }
            let sem = Semaphore::open(options.permits(n.max(0))).await.map_err(|e| failure(e, &url))?;
            let now = sem.set_permits(n).await.map_err(|e| failure(e, &url))?;
            say!("{key}: {now} permits");
        }
        "add-permits" => {
            let n = amount()?;
            let now = open(options).await?.add_permits(n).await.map_err(|e| failure(e, &url))?;
            say!("{key}: {now} permits");
        }
        _ => unreachable!("parse() accepts only known commands"),
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1).collect()) {
        Ok(a) => a,
        Err(f) => return report(f),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(Failure { code: EX_SOFTWARE, message: e.to_string() }),
    };
    let result = rt.block_on(async move {
        match args.command.as_str() {
            "run" => run(args).await,
            _ => operate(args).await,
        }
    });
    match result {
        Ok(0) if OUTPUT_FAILED.load(Ordering::Relaxed) => {
            warn!("pottery-semaphore: could not write the output\n");
            ExitCode::from(EX_IOERR)
        }
        Ok(code) => {
            let sig = DIE_OF.load(Ordering::SeqCst);
            if sig != 0 && code == 128u8.saturating_add(sig as u8) {
                die_of(sig);
            }
            ExitCode::from(code)
        }
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    if f.code == 0 {
        say!("{}", f.message);
    } else {
        warn!("pottery-semaphore: {}\n", f.message);
    }
    ExitCode::from(if f.code == 0 && OUTPUT_FAILED.load(Ordering::Relaxed) { EX_IOERR } else { f.code })
}
