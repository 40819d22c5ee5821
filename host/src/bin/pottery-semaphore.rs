//! `pottery-semaphore`: the semaphore for shells, cron jobs and operators.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pottery_semaphore_host::{Error, Options, Semaphore, Status};

const USAGE: &str = "usage: pottery-semaphore [--redis URL]... [--cluster] <command>

commands:
  run --key K [--permits N] [--timeout S] [--lease S] -- CMD [ARGS...]
        wait for a permit, run CMD while refreshing the lease, release, exit with CMD's status
  status --key K [--json]
        capacity, available permits, holders (token, holder, lease left) and waiters in order
  set-permits --key K N     set the number of permits (permits in use are never taken away)
  add-permits --key K N     add N permits (negative removes)

--redis URL   redis://[user:password@]host:port[/db], rediss://... (TLS) or unix:///path;
              default $REDIS_URL, else redis://127.0.0.1:6379. Repeat it for independent
              masters: each permit is then a slot held on a majority of them (Redlock mode)
--cluster     the --redis URLs are seed nodes of one Redis Cluster
--permits N   permits when `run` creates the semaphore (default 1; an existing one keeps its own)
--timeout S   give up after S seconds of waiting (exit status 75)
--lease S     lease of the permit in seconds (default 10), refreshed while CMD runs

exit status: CMD's own (128+N when killed by signal N); 75 timed out waiting; 64 usage;
             69 Redis unreachable; 77 authentication refused; 70 other errors";

/// sysexits.h codes, so scripts can tell outcomes apart.
const EX_USAGE: u8 = 64;
const EX_SOFTWARE: u8 = 70;
const EX_UNAVAILABLE: u8 = 69;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;

#[derive(Debug, Default)]
struct Args {
    redis: Vec<String>,
    cluster: bool,
    command: String,
    key: Option<String>,
    permits: Option<i64>,
    timeout: Option<f64>,
    lease: Option<f64>,
    json: bool,
    positional: Vec<String>,
    program: Vec<String>,
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
        Error::Quorum(_) => (EX_UNAVAILABLE, format!("more than half of the masters ({url}) failed; start them or check the URLs.")),
        Error::Auth(_) => (EX_NOPERM, "check the user and password in the URL (redis://user:password@host:port).".into()),
        Error::InvalidArgument(m) if m.starts_with("no semaphore") => {
            (EX_USAGE, "create it with `set-permits` or `run --permits N`.".into())
        }
        Error::InvalidArgument(_) => (EX_USAGE, "see --help.".into()),
        Error::WrongType(_) => (EX_SOFTWARE, "another program uses this key; pick another --key.".into()),
        _ => (EX_SOFTWARE, String::new()),
    };
    Failure { code, message: format!("{e}\n{hint}").trim_end().to_string() }
}

fn parse(raw: Vec<String>) -> Result<Args, Failure> {
    let mut args = Args::default();
    let mut it = raw.into_iter();
    let value = |it: &mut std::vec::IntoIter<String>, flag: &str| it.next().ok_or_else(|| usage(format!("{flag} needs a value")));
    let number = |s: String, flag: &str| s.parse::<f64>().map_err(|_| usage(format!("{flag}: not a number: {s}")));
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(Failure { code: 0, message: USAGE.into() }),
            "--redis" => args.redis.push(value(&mut it, "--redis")?),
            "--key" => args.key = Some(value(&mut it, "--key")?),
            "--permits" => {
                let v = value(&mut it, "--permits")?;
                args.permits = Some(v.parse().map_err(|_| usage(format!("--permits: not a whole number: {v}")))?);
            }
            "--timeout" => args.timeout = Some(number(value(&mut it, "--timeout")?, "--timeout")?),
            "--lease" => args.lease = Some(number(value(&mut it, "--lease")?, "--lease")?),
            "--json" => args.json = true,
            "--cluster" => args.cluster = true,
            "--" => {
                args.program = it.by_ref().collect();
                break;
            }
            flag if flag.starts_with("--") => return Err(usage(format!("unknown option {flag}"))),
            _ if args.command.is_empty() => args.command = arg,
            _ => args.positional.push(arg),
        }
    }
    match args.command.as_str() {
        "" => Err(usage("no command given")),
        "run" | "status" | "set-permits" | "add-permits" => Ok(args),
        other => Err(usage(format!("unknown command {other}"))),
    }
}

/// The options, and the masters' URLs (passwords hidden) for messages.
fn options(args: &Args) -> Result<(Options, String), Failure> {
    let urls = match args.redis.as_slice() {
        [] => vec![std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())],
        several => several.to_vec(),
    };
    let shown = urls.iter().map(|u| redacted(u)).collect::<Vec<_>>().join(", ");
    let key = args.key.clone().ok_or_else(|| usage("--key is required"))?;
    let mut options = Options::with_masters(urls, key).cluster(args.cluster).permits(args.permits.unwrap_or(1));
    if let Some(lease) = args.lease {
        if !(lease.is_finite() && lease > 0.0) {
            return Err(usage("--lease must be a positive number of seconds"));
        }
        options = options.lease(Duration::from_secs_f64(lease));
    }
    Ok((options, shown))
}

fn redacted(url: &str) -> String {
    // Never echo a password back to the terminal.
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn print_status(key: &str, s: &Status, json: bool) {
    if json {
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let holders: Vec<String> = s
            .holders
            .iter()
            .map(|h| format!(r#"{{"token":{},"holder":"{}","ttl_ms":{}}}"#, h.token, esc(&h.holder), h.ttl_ms))
            .collect();
        let waiters: Vec<String> =
            s.waiters.iter().map(|w| format!(r#"{{"id":{},"n":{},"holder":"{}"}}"#, w.id, w.n, esc(&w.holder))).collect();
        println!(
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
    println!("semaphore {key:?}: {} of {} permits available (initial value {})", s.available, s.capacity, s.initial);
    println!("holders ({}):", s.holders.len());
    for h in &s.holders {
        println!("  token {:>20}  holder {}  lease left {:.1} s", h.token, h.holder, h.ttl_ms as f64 / 1000.0);
    }
    println!("waiters ({}), first served first:", s.waiters.len());
    for (i, w) in s.waiters.iter().enumerate() {
        println!("  {:>3}. waiter {}  wants {}  holder {}", i + 1, w.id, w.n, w.holder);
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
        eprint!("\r\x1b[Kwaiting for a permit of {:?}: {place}, {:.1} s", sem.key(), started.elapsed().as_secs_f64());
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number touches no memory.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

async fn run(args: Args) -> Result<u8, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    if args.program.is_empty() {
        return Err(usage("run needs a command after --"));
    }
    let (options, url) = options(&args)?;
    let sem = Semaphore::open(options).await.map_err(|e| failure(e, &url))?;
    let timeout = args.timeout.map(|t| if t.is_finite() && t >= 0.0 { Ok(t) } else { Err(usage("--timeout must be >= 0")) }).transpose()?;
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal().then(|| tokio::spawn(show_progress(sem.clone(), started)));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| Failure { code: EX_SOFTWARE, message: e.to_string() })?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Failure { code: EX_SOFTWARE, message: e.to_string() })?;
    // Dropping the acquire on a signal leaves the queue cleanly.
    let acquired = tokio::select! {
        r = sem.acquire_n(1, true, timeout) => r,
        _ = interrupt.recv() => Err(Error::Cancelled),
        _ = terminate.recv() => Err(Error::Cancelled),
    };
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[K");
    }
    let permits = match acquired {
        Ok(p) if p.is_empty() => {
            return Err(Failure {
                code: EX_TEMPFAIL,
                message: format!("timed out after {:.1} s waiting for a permit of {:?}", started.elapsed().as_secs_f64(), sem.key()),
            });
        }
        Ok(p) => p,
        Err(Error::Cancelled) => return Ok(130),
        Err(e) => return Err(failure(e, &url)),
    };
    let mut child = tokio::process::Command::new(&args.program[0])
        .args(&args.program[1..])
        .env("POTTERY_SEMAPHORE_TOKEN", permits[0].token.to_string())
        .spawn()
        .map_err(|e| Failure { code: 127, message: format!("cannot run {}: {e}", args.program[0]) });
    let status = match child.as_mut() {
        Ok(child) => {
            let pid = child.id().unwrap_or(0);
            let forwarded = [SignalKind::terminate(), SignalKind::hangup(), SignalKind::quit(), SignalKind::user_defined1(), SignalKind::user_defined2()];
            let mut streams: Vec<_> = forwarded.iter().filter_map(|k| signal(*k).ok().map(|s| (k.as_raw_value(), s))).collect();
            // On a terminal, Ctrl-C already reaches the whole foreground group, the command included.
            let forward_interrupt = !std::io::stdin().is_terminal();
            loop {
                let next_signal = futures_like_select(&mut streams);
                tokio::select! {
                    status = child.wait() => break status.ok(),
                    _ = interrupt.recv() => if forward_interrupt { send_signal(pid, libc::SIGINT) },
                    Some(sig) = next_signal => send_signal(pid, sig),
                    () = sem.lost() => {
                        for p in sem.take_lost() {
                            eprintln!("pottery-semaphore: lost the permit (token {}) of {:?}: its lease ended or another holder released it; the command keeps running", p.token, sem.key());
                        }
                    }
                }
            }
        }
        Err(_) => None,
    };
    let released = sem.release_permits(permits.iter().map(|p| p.token).collect()).await;
    let child = child?;
    drop(child);
    if let Err(e) = released {
        eprintln!("pottery-semaphore: could not release the permit ({e}); it ends with its lease");
    }
    Ok(exit_code(status))
}

/// The first signal any of `streams` delivers.
async fn futures_like_select(streams: &mut [(i32, tokio::signal::unix::Signal)]) -> Option<i32> {
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
            (None, Some(sig)) => 128u8.saturating_add(sig as u8),
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
        v.parse().map_err(|_| usage(format!("not a whole number: {v}")))
    };
    let open = |options: Options| async { Semaphore::open(options.create(false)).await.map_err(|e| failure(e, &url)) };
    match args.command.as_str() {
        "status" => {
            let status = open(options).await?.status().await.map_err(|e| failure(e, &url))?;
            print_status(&key, &status, args.json);
        }
        "set-permits" => {
            let n = amount()?;
            let sem = Semaphore::open(options.permits(n.max(0))).await.map_err(|e| failure(e, &url))?;
            let now = sem.set_permits(n).await.map_err(|e| failure(e, &url))?;
            println!("{key}: {now} permits");
        }
        "add-permits" => {
            let n = amount()?;
            let now = open(options).await?.add_permits(n).await.map_err(|e| failure(e, &url))?;
            println!("{key}: {now} permits");
        }
        _ => unreachable!("parse() accepts only known commands"),
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1).collect()) {
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
        Ok(code) => ExitCode::from(code),
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    if f.code == 0 {
        println!("{}", f.message);
    } else {
        eprintln!("pottery-semaphore: {}", f.message);
    }
    ExitCode::from(f.code)
}
