//! The one place that spawns ffmpeg and ffprobe: a timeout, kill on drop
//! (and on cancellation), a concurrency limit, progress parsed from
//! `-progress pipe:1`, and the tail of stderr kept for error messages.

use crate::PipelineError;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const STDERR_TAIL: usize = 4096;

#[derive(Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    limit: Arc<Semaphore>,
    /// Each run's `RLIMIT_DATA`, bytes.
    memory: u64,
}

impl Tools {
    /// Finds ffmpeg and ffprobe on PATH; a clear error when they are missing.
    /// Each run may take `memory_mb` MiB of data memory (0: [`auto_memory_mb`]
    /// for this machine's cores).
    pub fn discover(concurrency: usize, memory_mb: u64) -> Result<Tools, PipelineError> {
        let memory_mb = match memory_mb {
            0 => auto_memory_mb(std::thread::available_parallelism().map_or(1, |n| n.get())),
            mb => mb,
        };
        let find = |name: &str| {
            std::env::var_os("PATH")
                .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.is_file()))
                .ok_or_else(|| {
                    PipelineError::Config(format!(
                        "{name} not found on PATH: install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)"
                    ))
                })
        };
        Ok(Tools {
            ffmpeg: find("ffmpeg")?,
            ffprobe: find("ffprobe")?,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            memory: memory_mb.saturating_mul(1 << 20),
        })
    }

    /// Runs `program args`, returning stdout. `on_progress` gets ffmpeg's
    /// `out_time_us` (microseconds of output written) when the command
    /// includes `-progress pipe:1`.
    pub async fn run(
        &self,
        program: &PathBuf,
        args: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<Vec<u8>, PipelineError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| PipelineError::Cancelled)?;
        let name = program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("tool")
            .to_owned();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd, self.memory);
        let mut child = cmd
            .spawn()
            .map_err(|e| PipelineError::Transient(format!("starting {name}: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let progress = args.iter().any(|a| a == "pipe:1");
        let read_out = async {
            let mut out = Vec::new();
            if progress {
                let mut lines = BufReader::new(&mut stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(us) = line
                        .strip_prefix("out_time_us=")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        on_progress(us);
                    }
                }
            } else {
                let _ = stdout.read_to_end(&mut out).await;
            }
            out
        };
        let read_err = async {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        };
        let work = async {
            let (out, err) = tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (out, err, status)
        };
        let finished = tokio::select! {
            r = tokio::time::timeout(timeout, work) => Some(r),
            _ = cancel.cancelled() => None,
        };
        let (out, err, status) = match finished {
            Some(Ok(r)) => r,
            stopped => {
                // Gone before we answer: a retry or the next worker then
                // never shares the work directory with this one.
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(match stopped {
                    None => PipelineError::Cancelled,
                    _ => PipelineError::Transient(format!(
                        "{name} timed out after {} s",
                        timeout.as_secs()
                    )),
                });
            }
        };
        let status =
            status.map_err(|e| PipelineError::Transient(format!("waiting for {name}: {e}")))?;
        if status.success() {
            return Ok(out);
        }
        let tail = String::from_utf8_lossy(&err)
            .trim()
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        match status.code() {
            // Killed by a signal (OOM killer, an operator): worth another try.
            None => Err(PipelineError::Transient(format!(
                "{name} was killed: {tail}"
            ))),
            // The machine's fault, not the media's: worth another try.
            Some(code) if LOCAL_TROUBLE.iter().any(|t| tail.contains(t)) => Err(
                PipelineError::Transient(format!("{name} failed (exit {code}): {tail}")),
            ),
            Some(code) => Err(PipelineError::ToolFailed {
                tool: name,
                code,
                stderr: tail,
            }),
        }
    }
}

/// What ffmpeg prints when the machine, not the media, is at fault.
/// (Not EIO or ENOMEM: ffmpeg reports broken media with those too.)
const LOCAL_TROUBLE: &[&str] = &["No space left on device", "Too many open files"];

/// The data-memory cap of one tool when none is configured, MiB. ffmpeg
/// starts threads by the core (x264 takes 1.5 per core and rung, the
/// decoder and scalers more), and `RLIMIT_DATA` counts each thread's stack
/// (8 MiB) and the malloc arena it dirties: a 3-rung 1080p ladder on two
/// cores had 730 MiB of data for 425 MiB resident. A cap fixed for two
/// cores would fail every large ladder, for good, on a 64-core machine.
pub fn auto_memory_mb(cores: usize) -> u64 {
    (cores as u64).saturating_mul(512).max(8192)
}

/// The child gets SIGKILL when the thread that spawned it dies, so a
/// worker killed with -9 leaves no ffmpeg behind writing into a work
/// directory its retry will use. Spawns happen in tasks on the runtime's
/// worker threads, which live as long as the process: never spawn from
/// `spawn_blocking` or `block_in_place`, whose threads retire when idle.
/// Its data memory (heap and private mappings, `RLIMIT_DATA`) is capped at
/// `memory` bytes: an allocation past it fails, and ffmpeg exits with
/// "Cannot allocate memory" instead of growing until the OOM killer picks
/// something (and a kill would be retried).
fn die_with_parent(cmd: &mut Command, memory: u64) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (prctl, getppid, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect (compared
            // with its pid, not 1: vidhost may itself be PID 1 in a container).
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent gone"));
            }
            // Never above a hard limit the process inherited (systemd's
            // LimitDATA, a container's ulimit): raising it is refused, and
            // the hard limit itself stays, so the child may not raise it.
            let mut cap = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_DATA, &mut cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            cap.rlim_cur = (memory as libc::rlim_t).min(cap.rlim_max);
            if libc::setrlimit(libc::RLIMIT_DATA, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(limit: usize) -> Tools {
        Tools {
            ffmpeg: PathBuf::from("/bin/sh"),
            ffprobe: PathBuf::from("/bin/sh"),
            limit: Arc::new(Semaphore::new(limit)),
            memory: 1 << 30,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        // `pipe:1` as $0 turns on progress parsing, as in ffmpeg's arguments.
        vec!["-c".into(), script.into(), "pipe:1".into()]
    }

    async fn run(t: &Tools, script: &str, secs: u64) -> Result<Vec<u8>, PipelineError> {
        let none = CancellationToken::new();
        t.run(
            &t.ffmpeg,
            &sh(script),
            Duration::from_secs(secs),
            &none,
            |_| {},
        )
        .await
    }

    #[tokio::test]
    async fn a_lower_inherited_hard_limit_is_kept() {
        // This process (nextest runs each test in its own) inherits a 2 GiB
        // hard limit; a 4 GiB cap must not try to raise it (refused without
        // privilege, so no tool would start): the child gets 2 GiB.
        let two_gib = libc::rlimit {
            rlim_cur: 2 << 30,
            rlim_max: 2 << 30,
        };
        // SAFETY: a plain syscall on this process's own limits.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &two_gib) }, 0);
        let t = Tools {
            memory: 4 << 30,
            ..tools(1)
        };
        let none = CancellationToken::new();
        let args = vec!["-c".to_owned(), "ulimit -d; ulimit -H -d".to_owned()];
        let out = t
            .run(&t.ffmpeg, &args, Duration::from_secs(5), &none, |_| {})
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        let got: Vec<&str> = text.split_whitespace().collect();
        // KiB: soft and hard both 2 GiB.
        assert_eq!(got, ["2097152", "2097152"]);
    }

    #[tokio::test]
    async fn each_run_gets_the_memory_cap() {
        let t = tools(1);
        let none = CancellationToken::new();
        let args = vec!["-c".to_owned(), "ulimit -d".to_owned()];
        let out = t
            .run(&t.ffmpeg, &args, Duration::from_secs(5), &none, |_| {})
            .await
            .unwrap();
        // KiB, as the shell reports it.
        assert_eq!(String::from_utf8_lossy(&out).trim(), "1048576");
    }

    #[test]
    fn the_default_cap_grows_with_the_cores() {
        assert_eq!(auto_memory_mb(2), 8192);
        assert_eq!(auto_memory_mb(16), 8192);
        assert_eq!(auto_memory_mb(64), 32768);
        // Unset means by the cores; set means exactly that.
        // (The test command installs ffmpeg.)
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            Tools::discover(1, 0).unwrap().memory,
            auto_memory_mb(cores) << 20
        );
        assert_eq!(Tools::discover(1, 300).unwrap().memory, 300 << 20);
    }

    fn alive(pid: i32) -> bool {
        // A zombie still has a /proc entry; it counts as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    /// Dead and waited for: not even a zombie is left.
    fn reaped(pid: i32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    /// A script that writes its pid to `file` (whole, by a rename: the
    /// file exists only once it holds the pid), then sleeps.
    fn pid_then_sleep(file: &std::path::Path) -> String {
        format!(
            "echo $$ > {0}.tmp && mv {0}.tmp {0}; exec sleep 30",
            file.display()
        )
    }

    fn pid_in(file: &std::path::Path) -> i32 {
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn progress_is_parsed_and_stderr_tail_explains_failures() {
        let t = tools(1);
        let mut seen = Vec::new();
        let none = CancellationToken::new();
        let script = "echo frame=1; echo out_time_us=1500000; echo out_time_us=3000000";
        t.run(
            &t.ffmpeg,
            &sh(script),
            Duration::from_secs(10),
            &none,
            |us| seen.push(us),
        )
        .await
        .unwrap();
        assert_eq!(seen, [1_500_000, 3_000_000]);

        let e = run(
            &t,
            "echo noise >&2; echo 'Invalid data found' >&2; exit 3",
            10,
        )
        .await
        .unwrap_err();
        match e {
            PipelineError::ToolFailed { code, stderr, .. } => {
                assert_eq!(code, 3);
                assert!(stderr.ends_with("Invalid data found"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        let e = run(&t, "echo 'x.m4s: No space left on device' >&2; exit 1", 10)
            .await
            .unwrap_err();
        assert!(matches!(e, PipelineError::Transient(_)), "{e:?}");
        let e = run(&t, "kill -9 $$", 10).await.unwrap_err();
        assert!(matches!(e, PipelineError::Transient(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_timeout_or_a_cancel_kills_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let t = tools(2);
        let pidfile = dir.path().join("timeout.pid");
        let script = pid_then_sleep(&pidfile);
        let e = run(&t, &script, 3).await.unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        // Gone by the time the run answers, not some time after.
        assert!(reaped(pid_in(&pidfile)), "killed on timeout");

        let pidfile = dir.path().join("cancel.pid");
        let script = pid_then_sleep(&pidfile);
        let cancel = CancellationToken::new();
        let args = sh(&script);
        let job = t.run(&t.ffmpeg, &args, Duration::from_secs(60), &cancel, |_| {});
        let canceller = async {
            while !pidfile.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        };
        let (r, _) = tokio::join!(job, canceller);
        assert!(matches!(r, Err(PipelineError::Cancelled)));
        assert!(reaped(pid_in(&pidfile)), "killed on cancel");
    }

    #[test]
    fn the_process_dies_with_the_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("orphan.pid");
        let script = pid_then_sleep(&pidfile);
        // A runtime on a thread that then ends, as a worker killed with -9
        // ends: the child must not outlive it.
        let leaked = pidfile.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let t = tools(1);
                let args = sh(&script);
                let none = CancellationToken::new();
                let mut job =
                    Box::pin(t.run(&t.ffmpeg, &args, Duration::from_secs(60), &none, |_| {}));
                while !leaked.exists() {
                    tokio::select! {
                        _ = &mut job => break,
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
                // Never dropped: kill-on-drop cannot be what stops it.
                std::mem::forget(job);
            });
            std::mem::forget(rt);
        })
        .join()
        .unwrap();
        let pid = pid_in(&pidfile);
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !alive(pid)
        });
        assert!(gone, "ffmpeg outlived its parent thread");
    }

    #[tokio::test]
    async fn the_concurrency_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let t = tools(1);
        let log = dir.path().join("log");
        let script = format!(
            "echo start >> {0}; sleep 0.3; echo end >> {0}",
            log.display()
        );
        let (a, b) = tokio::join!(run(&t, &script, 10), run(&t, &script, 10));
        a.unwrap();
        b.unwrap();
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines, "start\nend\nstart\nend\n", "one at a time");
    }
}
