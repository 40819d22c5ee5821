//! The `pottery-semaphore` command line, run as a user would against a real redis-server.

use std::path::{Path, PathBuf};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pottery_semaphore_tests::{key, Flavor, Server};

fn cli() -> PathBuf {
    pottery_semaphore_tests::built_binary("pottery-semaphore")
}

fn run(server: &Server, args: &[&str]) -> Output {
    Command::new(cli()).env("REDIS_URL", server.url()).args(args).output().expect("run the CLI")
}

/// The CLI started in the background, stdin closed (not a terminal), its stderr kept; `vars`
/// added to its environment (and so the command's).
fn spawn(server: &Server, args: &[&str], vars: &[(&str, &Path)]) -> std::process::Child {
    Command::new(cli())
        .env("REDIS_URL", server.url())
        .envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `command` run by a shell on a terminal of its own (script(1)), in the terminal's foreground
/// process group as a person's command would be. Whatever ran the tests: the shell is /bin/sh
/// whatever `$SHELL` says (script(1) runs `$SHELL -c`; bash execs a lone command, dash stays in
/// the foreground group, so a test starts its command with `exec` where that matters), and the
/// terminal's signals are at their default (a launcher that ignored them, as `nohup` or a
/// background job does, would pass that on, and the command could not trap them). `$CLI` is
/// the CLI's path and `vars` more variables, so that no path is pasted into shell code.
fn terminal_command(server: &Server, command: &str, vars: &[(&str, &Path)]) -> Command {
    let mut script = Command::new("env");
    script
        .args(["--default-signal=HUP,INT,QUIT,TERM", "script", "-qec", command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("CLI", cli())
        .env("REDIS_URL", server.url())
        .envs(vars.iter().copied());
    script
}

/// As [`terminal_command`], started, its stdin and stdout piped.
fn on_a_terminal(server: &Server, command: &str, vars: &[(&str, &Path)]) -> std::process::Child {
    terminal_command(server, command, vars).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("script (util-linux)")
}

/// Runs `command` on a terminal (see `on_a_terminal`), waits until it has created `started`,
/// then types `keys`: what the terminal showed, and how long after the keypress it all ended.
fn type_once_started(server: &Server, command: &str, vars: &[(&str, &Path)], started: &Path, keys: &[u8]) -> (String, Duration) {
    use std::io::Write;
    let mut child = on_a_terminal(server, command, vars);
    eventually("the command started", || started.exists());
    std::thread::sleep(Duration::from_millis(200));
    let typed = Instant::now();
    child.stdin.as_mut().unwrap().write_all(keys).unwrap();
    let out = child.wait_with_output().unwrap();
    (text(&out.stdout), typed.elapsed())
}

/// A fresh directory for a test's marker files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pottery-semaphore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The test servers are seconds old: a long-lived semaphore created by the harness avoids the
/// fresh-server guard (tested elsewhere).
fn create(server: &Server, key: &str, permits: i64) -> pottery_semaphore_host::BlockingSemaphore {
    pottery_semaphore_host::BlockingSemaphore::open(server.options(key).permits(permits)).expect("open")
}

#[test]
fn run_passes_the_exit_status_and_the_fencing_token() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-run");
    let _sem = create(&server, &k, 2);
    let out = run(&server, &["run", "--key", &k, "--", "sh", "-c", "echo token=$POTTERY_SEMAPHORE_TOKEN; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("token=1"), "{}", text(&out.stdout));
    let out = run(&server, &["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(r#""available":2"#), "the permit was released: {}", text(&out.stdout));
}

/// `status` whose output cannot be written (a full disk) fails with 74 rather than 0; a reader
/// that went away is no failure. A `$REDIS_URL` that is not UTF-8 is a usage error, not a
/// silent fall-back to the local default server.
#[test]
fn output_that_cannot_be_written_and_a_garbled_redis_url_are_errors() {
    use std::os::unix::ffi::OsStrExt;
    let server = Server::start(Flavor::Redis);
    let k = key("cli-output");
    let _sem = create(&server, &k, 1);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = Command::new(cli()).env("REDIS_URL", server.url()).args(["status", "--key", &k]).stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    let mut closed = Command::new(cli()).env("REDIS_URL", server.url()).args(["status", "--key", &k]).stdout(Stdio::piped()).spawn().unwrap();
    drop(closed.stdout.take());
    assert_eq!(closed.wait().unwrap().code(), Some(0), "a reader that went away failed the command");
    let garbled = std::ffi::OsStr::from_bytes(b"redis://\xff@127.0.0.1:1");
    let out = Command::new(cli()).env("REDIS_URL", garbled).args(["status", "--key", &k]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("REDIS_URL"), "{}", text(&out.stderr));
}

#[test]
fn run_times_out_with_a_distinct_status_and_status_lists_holders() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-timeout");
    let sem = create(&server, &k, 1);
    assert!(sem.acquire(false, None).unwrap());
    let started = Instant::now();
    let out = run(&server, &["run", "--key", &k, "--timeout", "0.3", "--", "true"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(3));
    let out = run(&server, &["status", "--key", &k, "--json"]);
    let json = text(&out.stdout);
    assert!(json.contains(&format!(r#""holder":"{}""#, sem.as_async().holder_id())), "{json}");
    assert!(json.contains(r#""waiters":[]"#), "the timed-out waiter left the queue: {json}");
    let out = run(&server, &["status", "--key", &k]);
    assert!(text(&out.stdout).contains("0 of 1 permits available"), "{}", text(&out.stdout));
}

#[test]
fn signals_reach_the_command_and_its_status_comes_back() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-signal");
    let _sem = create(&server, &k, 1);
    // The command proves it got the signal (exit 42), and says when it runs: a SIGTERM sent
    // while the CLI still opens the semaphore ends the CLI with 143 and would pass for one
    // forwarded to a plain `sleep`.
    let started = std::env::temp_dir().join(format!("{k}.started"));
    // (The trap ends its sleep too: run holds the permit until what the command left has ended.)
    let script = "trap 'kill $!; exit 42' TERM; touch \"$STARTED\"; sleep 30 & wait";
    let mut child = spawn(&server, &["run", "--key", &k, "--", "sh", "-c", script], &[("STARTED", &started)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait").code();
    let _ = std::fs::remove_file(&started);
    assert_eq!(code, Some(42), "the forwarded SIGTERM reached the command, whose status comes back");
    let out = run(&server, &["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(r#""available":1"#), "released after the signal: {}", text(&out.stdout));
}

/// A process a test started, killed if the test fails before it ended (a passing test saw it
/// end: its pid may be another's by then).
struct Killed(i32);

impl Drop for Killed {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill(2) touches no memory; the process is one this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// The pid a command under test writes to `file` once it runs.
fn pid_in(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell that the forwarded SIGTERM ends leaves its children running, still doing the work
/// the permit covers: the CLI adopts them, passes the signal on, and releases the permit only
/// once they have ended. Before, it released it as soon as the shell ended, while `sleep` ran on.
#[test]
fn what_the_command_leaves_running_keeps_the_permit_until_it_ends() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-orphans");
    let _sem = create(&server, &k, 1);
    let pid_file = scratch(&k).join("sleep.pid");
    // `; true` keeps sh from exec-ing into the last command: sleep is sh's child.
    let script = "sleep 30 & echo $! > \"$PID_FILE\"; wait; true";
    let mut child = spawn(&server, &["run", "--key", &k, "--", "sh", "-c", script], &[("PID_FILE", &pid_file)]);
    let sleeper = pid_in(&pid_file);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_file(&pid_file);
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let sleeping = unsafe { libc::kill(sleeper, 0) } == 0;
    if sleeping {
        #[allow(unsafe_code)]
        // SAFETY: as above; the sleep this test started.
        unsafe {
            libc::kill(sleeper, libc::SIGKILL)
        };
    }
    assert!(!sleeping, "the permit was released while the command's sleep still ran");
    // It dies of the signal itself once the permit is back (a shell's status 143), as shells
    // expect of a job a signal stopped.
    assert_eq!(status.signal(), Some(libc::SIGTERM), "ended by the forwarded SIGTERM: {status:?}");
    let out = run(&server, &["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(r#""available":1"#), "released at the end: {}", text(&out.stdout));
    // A shell's background job ignores SIGINT: a SIGINT ends the shell, and the permit stays
    // held while the job runs on; the next signal stops the job.
    let job_file = scratch(&k).join("job.pid");
    let script = "sleep 300 & echo $! > \"$PID_FILE\"; wait; true";
    let mut child = spawn(&server, &["run", "--key", &k, "--", "sh", "-c", script], &[("PID_FILE", &job_file)]);
    let job = Killed(pid_in(&job_file));
    let interrupt = || assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill").success());
    interrupt();
    // The shell has ended once run has adopted its job.
    let parent = || std::fs::read_to_string(format!("/proc/{}/stat", job.0)).ok().and_then(|s| s[s.rfind(')')? + 2..].split(' ').nth(1)?.parse::<u32>().ok());
    eventually("run adopted the job", || parent() == Some(child.id()));
    let out = run(&server, &["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(r#""available":0"#), "held while the job runs: {}", text(&out.stdout));
    interrupt();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "a second signal did not stop the job");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(libc::SIGINT), "the shell's status: ended by SIGINT: {status:?}");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let job_runs = unsafe { libc::kill(job.0, 0) } == 0;
    assert!(!job_runs, "the job outlived run");
    // A daemon the command starts (a session of its own, as gpg-agent's) is not waited for.
    let started = Instant::now();
    let out = run(&server, &["run", "--key", &k, "--", "sh", "-c", "setsid sleep 12 </dev/null >/dev/null 2>&1 &"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?} for a daemon", started.elapsed());
    let _ = std::fs::remove_dir_all(job_file.parent().expect("the scratch directory"));
}

#[test]
fn operators_set_and_add_permits_and_errors_say_what_to_do() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-ops");
    let out = run(&server, &["status", "--key", &k]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("no semaphore"), "{}", text(&out.stderr));
    let out = run(&server, &["set-permits", "--key", &k, "4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&server, &["add-permits", "--key", &k, "-1"]);
    assert_eq!(text(&out.stdout).trim(), format!("{k}: 3 permits"));
    let out = Command::new(cli()).args(["--redis", "redis://127.0.0.1:1", "status", "--key", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains("is Redis running"), "{}", text(&out.stderr));
    // The URL the hint repeats hides its password however it is written.
    for url in ["redis://app:hunter2@127.0.0.1:1", "unix:///nonexistent.sock?db=0&%70ass=hunter2"] {
        let out = Command::new(cli()).args(["--redis", url, "status", "--key", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(69));
        let said = text(&out.stderr);
        assert!(said.contains("is Redis running") && !said.contains("hunter2"), "{said}");
    }
    let out = run(&server, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
    // What a command would ignore is refused instead, changing nothing.
    for args in [
        &["add-permits", "--key", &k, "1", "2"][..],
        &["status", "--key", &k, "other"],
        &["status", "--key", &k, "--timeout", "-5"],
        &["set-permits", "--key", &k, "9", "--keep-running"],
        &["run", "--key", &k, "--json", "--", "true"],
        &["run", "--key", &k, "--key", "other", "--", "true"],
        &["run", "--key", &k, "--timeout", "1", "--timeout", "2", "--", "true"],
        &["run", "--key", &k, "--permits", "1", "--permits", "2", "--", "true"],
        &["run", "--key", &k, "--lease", "1", "--lease", "2", "--", "true"],
        &["add-permits", "--key", &k, "--permits", "5", "1"],
        &["status", "--key", &k, "--", "true"],
    ] {
        let out = run(&server, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out.stderr));
    }
    // A URL in the wrong place is refused without its password (error output goes to logs).
    for args in [
        &["--redis=redis://app:hunter2@127.0.0.1:1", "status", "--key", &k][..],
        &["redis://app:hunter2@127.0.0.1:1", "status", "--key", &k],
        &["status", "--key", &k, "redis://app:hunter2@127.0.0.1:1"],
        &["run", "--key", &k, "redis://app:hunter2@127.0.0.1:1"],
        &["add-permits", "--key", &k, "redis://app:hunter2@127.0.0.1:1"],
        &["run", "--key", &k, "--timeout", "redis://app:hunter2@127.0.0.1:1", "--", "true"],
    ] {
        let out = run(&server, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("hunter2"), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(text(&run(&server, &["add-permits", "--key", &k, "0"]).stdout).trim(), format!("{k}: 3 permits"));
    // A refused number creates nothing: a semaphore made here with 0 permits would stay so.
    let fresh = key("cli-ops-negative");
    assert_eq!(run(&server, &["set-permits", "--key", &fresh, "-1"]).status.code(), Some(64));
    assert!(text(&run(&server, &["status", "--key", &fresh]).stderr).contains("no semaphore"));
}

#[test]
fn waiting_on_a_terminal_shows_the_place_in_the_queue_and_elsewhere_stays_quiet() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-progress");
    let sem = create(&server, &k, 1);
    assert!(sem.acquire(false, None).unwrap());
    // script(1) gives the CLI a terminal, as a person running it would have.
    let command = format!("\"$CLI\" run --key {k} --timeout 1 -- true");
    let out = terminal_command(&server, &command, &[]).output().expect("script (util-linux)");
    let shown = text(&out.stdout);
    assert!(shown.contains("position 1 of 1 in the queue"), "{shown}");
    assert!(shown.contains("timed out"), "{shown}");
    let quiet = run(&server, &["run", "--key", &k, "--timeout", "0.5", "--", "true"]);
    assert!(!text(&quiet.stderr).contains("position"), "no progress without a terminal: {}", text(&quiet.stderr));
}

/// On a terminal, a SIGINT sent to the CLI alone with kill(2) reaches the command. Only the
/// terminal's own (Ctrl-C), which the command gets itself, is not forwarded; telling them
/// apart by the foreground process group swallowed this one.
#[test]
fn an_interrupt_sent_to_the_cli_on_a_terminal_reaches_the_command() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-kill-int");
    let _sem = create(&server, &k, 1);
    let dir = scratch("cli-int");
    let pid_file = dir.join("cli.pid");
    // The trap is set before the pid is written: the SIGINT may come right after.
    let command = format!(
        "\"$CLI\" run --key {k} -- sh -c 'trap \"echo got-int; kill \\$!; exit 3\" INT; echo $PPID > \"$PID_FILE\"; sleep 10 & wait'"
    );
    let child = on_a_terminal(&server, &command, &[("PID_FILE", &pid_file)]);
    let cli_pid = || std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    eventually("the command started", || cli_pid().is_some());
    let sent = Command::new("kill").args(["-INT", &cli_pid().unwrap().to_string()]).status().expect("kill(1)");
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(shown.contains("got-int"), "the command never saw the SIGINT: {shown:?}");
}

/// Ctrl-\ on the terminal reaches the command once: the terminal sends it to the command
/// too, so the CLI does not forward it (it did, and such a command saw SIGQUIT twice). The CLI
/// is exec'd: a shell left in the foreground group would die of the SIGQUIT and hang up.
#[test]
fn a_quit_from_the_terminal_reaches_the_command_once() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-tty-quit");
    let _sem = create(&server, &k, 1);
    let dir = scratch("cli-quit");
    let started = dir.join("started");
    // Counts SIGQUITs for 2 s after it starts (the sleeps it runs die of theirs).
    let counting = "n=0; trap \"n=\\$((n+1))\" QUIT; touch \"$STARTED\"; i=0; while [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; echo quits=$n";
    let command = format!("exec \"$CLI\" run --key {k} -- sh -c '{counting}'");
    let (shown, _) = type_once_started(&server, &command, &[("STARTED", &started)], &started, b"\x1c");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(shown.contains("quits=1"), "{shown:?}");
}

/// A command that left the CLI's process group (GNU `timeout` without --foreground does) gets no
/// Ctrl-C from the terminal, which signals the foreground group: the CLI passes it on. It did
/// not, taking the terminal's signal for one the command had already received.
#[test]
fn a_ctrl_c_reaches_a_command_that_left_the_process_group() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-tty-group");
    let _sem = create(&server, &k, 1);
    let dir = scratch("cli-group");
    let started = dir.join("started");
    let interruptible = "trap \"echo got-int; exit 3\" INT; touch \"$STARTED\"; i=0; while [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; echo no-int";
    let command = format!("exec \"$CLI\" run --key {k} -- timeout 20 sh -c '{interruptible}'");
    let (shown, took) = type_once_started(&server, &command, &[("STARTED", &started)], &started, b"\x03");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(shown.contains("got-int"), "{shown:?}");
    assert!(took < Duration::from_secs(3), "ended {took:?} after the Ctrl-C");
}

/// A Ctrl-C ends the command, a shell, while a worker it started in the background runs on (in
/// the CLI's process group, so the terminal's SIGINT reached it too): the CLI waits for the
/// worker but does not pass it the SIGINT again, which would break into its clean-up.
#[test]
fn a_ctrl_c_that_ended_the_command_reaches_what_it_left_running_once() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-tty-orphan-int");
    let _sem = create(&server, &k, 1);
    let dir = scratch("cli-orphan-int");
    let (started, worker) = (dir.join("started"), dir.join("worker.pl"));
    // Counts SIGINTs for 2 s (perl sets a handler where the shell left SIGINT ignored).
    let counting = "my $n = 0; $SIG{INT} = sub { $n++ }; open(my $f, '>', $ENV{STARTED}); close $f;\n\
                    for (1..20) { select(undef, undef, undef, 0.1) } print \"ints=$n\\n\";\n";
    std::fs::write(&worker, counting).unwrap();
    let command = format!("exec \"$CLI\" run --key {k} -- sh -c 'perl \"$WORKER\" & sleep 10'");
    let (shown, _) = type_once_started(&server, &command, &[("STARTED", &started), ("WORKER", &worker)], &started, b"\x03");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(shown.contains("ints=1"), "{shown:?}");
}

/// The CLI as the session leader of its terminal (as `ssh -t host pottery-semaphore run …`
/// leaves it): when the terminal hangs up, the kernel sends SIGHUP to the leader alone, and the
/// CLI passes it on to the command, holds the permit while the command finishes, then gives it
/// back. (A CLI that died of the SIGHUP would pass the first check too: the kernel hangs up the
/// foreground group when its session leader exits. It would not give the permit back, which the
/// 30 s lease keeps for far longer than the check waits.)
#[test]
fn a_hang_up_of_the_terminal_reaches_the_command_through_the_session_leader() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-hang-up");
    let sem = create(&server, &k, 1);
    let dir = scratch("cli-hup");
    let (started, hung_up) = (dir.join("started"), dir.join("hung-up"));
    let command = format!(
        "exec \"$CLI\" run --key {k} --lease 30 -- sh -c 'trap \"touch \\\"\\$HUNG_UP\\\"; sleep 1; kill \\$!; exit 0\" HUP; touch \"$STARTED\"; sleep 30 & wait'"
    );
    let mut terminal = on_a_terminal(&server, &command, &[("STARTED", &started), ("HUNG_UP", &hung_up)]);
    eventually("the command started", || started.exists());
    // Killing script(1) closes the terminal's master side: a hang-up.
    terminal.kill().unwrap();
    terminal.wait().unwrap();
    eventually("the command got SIGHUP", || hung_up.exists());
    assert_eq!(sem.value().unwrap(), 0, "the permit is held while the command finishes");
    eventually("the CLI gave the permit back once the command ended", || sem.value().unwrap() == 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_redis_urls_make_a_several_master_semaphore() {
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(Flavor::Redis)).collect();
    let k = key("cli-masters");
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let options = pottery_semaphore_host::Options::with_masters(urls.clone(), &k).permits(2).guard_fresh_server(false);
    let sem = pottery_semaphore_host::BlockingSemaphore::open(options).expect("open");
    let masters: Vec<&str> = urls.iter().flat_map(|u| ["--redis", u.as_str()]).collect();
    let cli_run = |args: &[&str]| Command::new(cli()).args(&masters).args(args).output().expect("run the CLI");
    let out = cli_run(&["run", "--key", &k, "--", "sh", "-c", "echo token=$POTTERY_SEMAPHORE_TOKEN"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token: u64 = text(&out.stdout).trim().strip_prefix("token=").expect("token").parse().expect("a number");
    assert!(token >> 16 > 0, "a slot token: epoch above the slot bits ({token})");
    let out = cli_run(&["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(r#""capacity":2"#) && text(&out.stdout).contains(r#""available":2"#), "{}", text(&out.stdout));
    // Slot tokens exceed 2^53, beyond what a JSON reader that parses numbers as doubles keeps
    // exact: they are strings.
    let held = sem.acquire_n(1, false, None).expect("acquire")[0].token;
    assert!(held > 1 << 53);
    let out = cli_run(&["status", "--key", &k, "--json"]);
    assert!(text(&out.stdout).contains(&format!(r#""token":"{held}""#)), "{}", text(&out.stdout));
    servers[1].kill();
    servers[2].kill();
    let out = cli_run(&["status", "--key", &k]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains("too many of the masters"), "{}", text(&out.stderr));
}

#[test]
fn cluster_seed_nodes_reach_a_semaphore_on_a_redis_cluster() {
    let cluster = pottery_semaphore_tests::cluster::Cluster::start(Flavor::Redis, 3);
    let k = key("cli-cluster");
    let _sem = pottery_semaphore_host::BlockingSemaphore::open(cluster.options(&k).permits(2)).expect("open");
    // One seed is enough: the client discovers the node that holds the semaphore's slot.
    let seed = cluster.nodes[0].url();
    let out = Command::new(cli()).args(["--redis", &seed, "--cluster", "run", "--key", &k, "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(cli()).args(["--redis", &seed, "--cluster", "status", "--key", &k, "--json"]).output().unwrap();
    assert!(text(&out.stdout).contains(r#""capacity":2"#), "{}", text(&out.stdout));
}

/// Polls `check` every 20 ms for up to 5 s.
fn eventually(what: &str, check: impl Fn() -> bool) {
    pottery_semaphore_tests::eventually(Duration::from_secs(5), what, check);
}

/// Another holder's release takes the CLI's permit (permits are fungible) while the command
/// runs: the CLI stops the command and exits 76, so a script can tell that exclusion broke;
/// with --keep-running it only warns and passes the command's own status.
#[test]
fn a_permit_lost_while_the_command_runs_stops_it_unless_told_otherwise() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-lost");
    let other = create(&server, &k, 1);
    let start = |extra: &[&str], command: &[&str]| {
        let args: Vec<&str> = ["run", "--key", &k, "--lease", "1.5"].iter().chain(extra).chain(&["--"]).chain(command).copied().collect();
        spawn(&server, &args, &[])
    };
    let held = || other.status().expect("status").holders.len() == 1;
    let child = start(&[], &["sleep", "30"]);
    eventually("the CLI holds the permit", held);
    let released = Instant::now();
    other.release(1).expect("release");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stderr));
    assert!(released.elapsed() < Duration::from_secs(5), "stopped {:?} after the loss", released.elapsed());
    assert!(text(&out.stderr).contains("stopping the command"), "{}", text(&out.stderr));

    let child = start(&["--keep-running"], &["sh", "-c", "sleep 2; exit 3"]);
    eventually("the CLI holds the permit", held);
    other.release(1).expect("release");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("keeps running"), "{}", text(&out.stderr));
}

/// Redis out of reach while the command runs: the lease cannot be extended, and from its end
/// another process may be granted the permit. The command is stopped by then, with what it
/// started, also when both ignore SIGTERM: it was only sent SIGTERM when the loss was seen, at
/// the lease's end, and SIGKILL 10 s later, ten seconds beside the next holder. And `run` exits
/// 76, the permit's loss, also when the command ends at the SIGTERM (not dying of it, as for a
/// SIGTERM sent to `run`).
#[test]
fn a_command_is_stopped_before_a_lease_it_cannot_extend_ends() {
    use pottery_semaphore_tests::proxy::Proxy;
    let server = Server::start(Flavor::Redis);
    let k = key("cli-unextended");
    create(&server, &k, 1);
    let pid_file = std::env::temp_dir().join(format!("pottery-semaphore-cli-{}-{k}", std::process::id()));
    let ignoring = format!("trap '' TERM; sleep 100 & echo $$ $! > {0}.tmp; mv {0}.tmp {0}; wait", pid_file.display());
    let stopping = format!("echo $$ > {0}.tmp; mv {0}.tmp {0}; exec sleep 100", pid_file.display());
    for script in [ignoring, stopping] {
        let _ = std::fs::remove_file(&pid_file);
        let proxy = Proxy::start(server.port);
        let child = Command::new(cli())
            .env("REDIS_URL", proxy.url())
            .args(["run", "--key", &k, "--lease", "2", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pids = || -> Option<Vec<i32>> { std::fs::read_to_string(&pid_file).ok()?.split_whitespace().map(|p| p.parse().ok()).collect() };
        eventually("the command runs", || pids().is_some());
        let pids = pids().expect("pids");
        let _strays: Vec<Killed> = pids.iter().map(|p| Killed(*p)).collect();
        let cut = Instant::now();
        proxy.cut();
        // Its lease was last extended before the cut, so it may be another's from `cut + lease`.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
        while pids.iter().any(|p| alive(*p)) {
            assert!(cut.elapsed() < Duration::from_millis(2_250), "{script}: still running {:?} after Redis went out of reach", cut.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        proxy.restore();
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(76), "{script}: {:?} {}", out.status, text(&out.stderr));
        assert!(text(&out.stderr).contains("could not be extended"), "{}", text(&out.stderr));
    }
    let _ = std::fs::remove_file(&pid_file);
}

/// `--permits 0` is a usage error found before anything is created (a semaphore of no permits
/// stayed in Redis, and a corrected `--permits` could not change it); a semaphore an operator
/// set to fewer permits than `run` asks for is not the command line's fault (69, not 64); a
/// password on the command line is warned of.
#[test]
fn zero_permits_a_too_small_semaphore_and_a_password_in_the_arguments() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-zero");
    let out = run(&server, &["run", "--key", &k, "--permits", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let exists: i64 = redis::cmd("EXISTS").arg(format!("pottery-semaphore:{{{k}}}:meta")).query(&mut server.connection()).expect("EXISTS");
    assert_eq!(exists, 0, "--permits 0 created the semaphore");

    let other = create(&server, &k, 1);
    other.set_permits(0).expect("set-permits 0");
    let out = run(&server, &["run", "--key", &k, "--", "true"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("set-permits"), "{}", text(&out.stderr));

    let with_password = format!("redis://:s3cret@127.0.0.1:{}", server.port);
    let out = Command::new(cli()).args(["--redis", &with_password, "status", "--key", &k]).output().expect("run");
    assert!(text(&out.stderr).contains("readable by every user"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("s3cret"), "{}", text(&out.stderr));
}

/// SIGTERM while waiting: the CLI leaves the queue before it exits (a dead waiter would hold
/// up those behind it for seconds) and dies of it (a shell's status 128 + 15).
#[test]
fn a_signal_while_waiting_leaves_the_queue_before_exiting() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-wait-signal");
    let other = create(&server, &k, 1);
    assert!(other.acquire(false, None).unwrap());
    let mut child = spawn(&server, &["run", "--key", &k, "--", "true"], &[]);
    eventually("the CLI waits in the queue", || other.status().expect("status").waiters.len() == 1);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGTERM));
    assert!(other.status().expect("status").waiters.is_empty(), "the CLI exited still queued");
}

/// `nohup` (or a shell's `trap '' HUP`) leaves SIGHUP ignored: it stays ignored, by the CLI and
/// by the command, which a handler of the CLI's would have reset to the default across exec.
#[test]
fn an_ignored_signal_stays_ignored_by_the_cli_and_the_command() {
    use std::os::unix::process::CommandExt;
    let server = Server::start(Flavor::Redis);
    let k = key("cli-nohup");
    let _sem = create(&server, &k, 1);
    let script = format!("trap '' HUP; exec \"$CLI\" run --key {k} -- sh -c 'sleep 1; echo survived'");
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("CLI", cli())
        .env("REDIS_URL", server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    // As a terminal that hangs up does: the whole process group.
    let pgid = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-HUP", "--", &pgid]).status().expect("kill").success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "SIGHUP was not ignored");
    assert_eq!(text(&out.stdout), "survived\n");
}

/// The CLI killed (SIGKILL, the OOM killer) while its command runs: nothing refreshes the permit
/// any more, and once its lease ends another may hold it. On Linux the command is killed with it,
/// so that it does not work on beside that holder.
#[cfg(target_os = "linux")]
#[test]
fn a_command_does_not_outlive_a_killed_cli() {
    let server = Server::start(Flavor::Redis);
    let k = key("cli-killed");
    let _sem = create(&server, &k, 1);
    let dir = scratch("cli-killed");
    let pid_file = dir.join("pid");
    let mut cli = spawn(&server, &["run", "--key", &k, "--", "sh", "-c", "echo $$ > \"$PID_FILE\"; exec sleep 30"], &[("PID_FILE", &pid_file)]);
    eventually("the command started", || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')));
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    cli.kill().unwrap();
    cli.wait().unwrap();
    // Ended: gone, or a zombie that whoever adopted it has yet to reap.
    let running = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
    eventually("the command was killed with the CLI", || !running());
    let _ = std::fs::remove_dir_all(&dir);
}
