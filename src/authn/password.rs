//! Passwords: the NIST SP 800-63B policy, and argon2id hashing off the async runtime.
//!
//! Hashing is deliberately slow (at least OWASP's m=19 MiB, t=2, p=1), so it runs on a few
//! dedicated hashing threads (`max_concurrent_hashes`): a storm of logins queues for them
//! instead of occupying the threads that move proxied traffic. Those threads also run at the
//! kernel's idle priority (`SCHED_IDLE`; nice 19 where that is refused): when the cores are
//! busy, clinical traffic goes first and sign-ins wait longer, rather than both slowing down
//! alike. Nice 19 alone was not enough: it lowers a thread's share of a busy core, but a
//! serving thread that wakes can still wait behind a hash for a few milliseconds, whereas a
//! `SCHED_IDLE` thread gives the core up at once. (Measured with `benches/load/run`'s login
//! storm, four interleaved runs each way: with `chrt -i` applied to one build's hashing
//! thread, proxied p99 rose 2.10x to 2.32x at nice 19 and 1.04x to 1.25x under `SCHED_IDLE`;
//! between the builds before and after this change, 1.89x to 2.47x and 1.06x to 1.61x. About
//! a third fewer logins completed during the storm.)

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

const COMMON: &str = include_str!("../../assets/common-passwords.txt");

/// Longest accepted password (NIST: at least 64 must be allowed).
pub const MAX_PASSWORD_LEN: usize = 256;

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Shorter than the configured minimum.
    #[error("password must have at least {0} characters")]
    TooShort(usize),
    /// Longer than [`MAX_PASSWORD_LEN`].
    #[error("password must have at most {MAX_PASSWORD_LEN} characters")]
    TooLong,
    /// On the shipped list of common or breached passwords.
    #[error("password is on the list of common or breached passwords")]
    Common,
    /// Equal to (or contains) the username.
    #[error("password must not be the username")]
    Username,
}

/// Checks a new password against the policy (length only, no composition rules).
pub fn check_policy(password: &str, username: &str, min_len: usize) -> Result<(), PolicyError> {
    let length = password.chars().count();
    if length < min_len {
        return Err(PolicyError::TooShort(min_len));
    }
    if length > MAX_PASSWORD_LEN {
        return Err(PolicyError::TooLong);
    }
    let lower = password.to_lowercase();
    let name = username.to_lowercase();
    if lower == name || (name.chars().count() >= 3 && lower.contains(&name)) {
        return Err(PolicyError::Username);
    }
    if COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|common| common == lower)
    {
        return Err(PolicyError::Common);
    }
    Ok(())
}

/// argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| e.to_string())?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes synchronously (CLI use).
    pub fn hash_blocking(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        self.argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }
}

/// Verifies a password against a PHC string (constant-time inside argon2); false on any error.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A unit of hashing work for the hashing threads.
type HashJob = Box<dyn FnOnce() + Send>;

/// How much lower than the rest of the process the hashing threads run (nice value), where
/// the idle scheduling policy is refused.
const HASHING_NICENESS: i32 = 19;

/// Hashing and verification on `slots` dedicated low-priority threads.
#[derive(Debug, Clone)]
pub struct PasswordWorker {
    params: HashParams,
    jobs: Sender<HashJob>,
    dummy: Arc<String>,
}

impl PasswordWorker {
    /// Starts `slots` hashing threads; computes the dummy hash used for unknown users. The
    /// threads end when the last handle is dropped (a reload builds new ones).
    pub fn new(params: HashParams, slots: usize) -> Result<PasswordWorker, String> {
        let dummy = params.hash_blocking("wardgate dummy password for timing equality")?;
        let (jobs, queue) = mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for number in 1..=slots.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("wardgate-hash-{number}"))
                .spawn(move || run_hashing_thread(&queue))
                .map_err(|e| format!("cannot start a password hashing thread: {e}"))?;
        }
        Ok(PasswordWorker {
            params,
            jobs,
            dummy: Arc::new(dummy),
        })
    }

    /// Runs `work` on a hashing thread; `None` if the threads are gone.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = oneshot::channel();
        let job: HashJob = Box::new(move || {
            // The caller may have gone while the job queued (client disconnected, request
            // dropped): a storm of abandoned sign-ins must not keep the hashing threads busy
            // and make every later sign-in wait behind work nobody will read.
            if done.is_closed() {
                return;
            }
            let _ = done.send(work());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no user, so
    /// unknown and known names take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.as_ref().clone());
        let verified = self.run(move || verify_blocking(&password, &phc)).await;
        known && verified.unwrap_or(false)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        let params = self.params;
        self.run(move || params.hash_blocking(&password))
            .await
            .unwrap_or_else(|| Err("password hashing threads stopped".into()))
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until every sender is gone.
fn run_hashing_thread(queue: &Mutex<Receiver<HashJob>>) {
    lower_own_priority();
    loop {
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            // A panicking job must not take a hashing thread with it; its caller sees the
            // dropped answer as a failed check.
            Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
            Err(_) => return,
        }
    }
}

/// Puts the calling thread (only it: on Linux scheduling policy and nice value are per
/// thread) under `SCHED_IDLE`, or failing that 19 nice levels lower (at most 19). Lowering
/// needs no privilege; a sandbox may still refuse it (the systemd unit allows both calls),
/// and then the thread keeps normal priority, which costs latency under a storm but nothing
/// else.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
            NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        // The crate sets the policy, then the nice value that goes with it (0): the second
        // step may be refused after the first took effect, so the policy is what is checked.
        let _ = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        );
        if matches!(thread_schedule_policy(), Ok(policy) if policy == idle) {
            return;
        }
    }
    let lowered = rustix::process::getpriority_process(None).and_then(|nice| {
        rustix::process::setpriority_process(None, (nice + HASHING_NICENESS).min(19))
    });
    match lowered {
        Ok(()) => tracing::debug!(
            "password hashing thread runs 19 nice levels lower (SCHED_IDLE refused)"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "password hashing thread keeps normal priority: a login storm will slow proxied traffic more")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashing runs on its own threads, under the idle scheduling policy (below every thread
    /// that serves traffic), and still answers correctly (wrong password, unknown user).
    #[test]
    fn hashing_threads_run_at_idle_priority() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let worker = PasswordWorker::new(HashParams::default(), 2).expect("worker");
        let phc = runtime
            .block_on(worker.hash("correct horse battery".into()))
            .expect("hash");
        assert!(runtime.block_on(worker.verify("correct horse battery".into(), Some(phc.clone()))));
        assert!(!runtime.block_on(worker.verify("wrong horse battery".into(), Some(phc))));
        assert!(!runtime.block_on(worker.verify("correct horse battery".into(), None)));
        // /proc/<pid>/task/<tid>/stat, after the name: field 41 (the 39th after it) is the
        // scheduling policy, 5 being SCHED_IDLE; this thread's own is 0 (SCHED_OTHER).
        let policy_of = |task: &std::path::Path| -> Option<(String, u32)> {
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            let policy = stat.rsplit_once(')')?.1.split_whitespace().nth(38)?;
            Some((name.trim().to_owned(), policy.parse().ok()?))
        };
        let policies = || -> Vec<(String, u32)> {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|task| policy_of(&task.ok()?.path()))
                .collect()
        };
        let all_idle = |policies: &[(String, u32)]| {
            let hashing: Vec<u32> = policies
                .iter()
                .filter(|(name, _)| name.starts_with("wardgate-hash"))
                .map(|(_, policy)| *policy)
                .collect();
            hashing.len() >= 2 && hashing.iter().all(|policy| *policy == 5)
        };
        // Other tests of this process start hashing threads of their own, which lower
        // themselves first thing: one caught before that gets a moment to do it.
        let mut seen = policies();
        for _ in 0..100 {
            if all_idle(&seen) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            seen = policies();
        }
        assert!(all_idle(&seen), "{seen:?}");
        let own = policy_of(std::path::Path::new("/proc/thread-self")).expect("own policy");
        assert_eq!(own.1, 0, "the test thread keeps the normal policy");
    }

    /// Work queued for a caller that has gone is skipped, not computed.
    #[test]
    fn abandoned_jobs_are_skipped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let worker = PasswordWorker::new(HashParams::default(), 1).expect("worker");
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        runtime.block_on(async {
            // Hold the only hashing thread until the abandoned jobs are queued behind it.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::spawn({
                let worker = worker.clone();
                async move { worker.run(move || held.recv().is_ok()).await }
            });
            tokio::task::yield_now().await;
            for _ in 0..5 {
                let ran = Arc::clone(&ran);
                let abandoned = worker.run(move || {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                // Polled once (the job is queued), then dropped like a disconnected client.
                let _ = tokio::time::timeout(std::time::Duration::from_millis(1), abandoned).await;
            }
            release.send(()).expect("release");
            assert_eq!(blocker.await.expect("blocker"), Some(true));
            assert_eq!(worker.run(|| 7).await, Some(7), "later work still runs");
        });
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn policy_is_length_list_and_username_only() {
        assert_eq!(
            check_policy("short", "a", 12),
            Err(PolicyError::TooShort(12))
        );
        assert_eq!(
            check_policy("Password123!", "a", 12),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("alice-in-wonderland", "alice", 12),
            Err(PolicyError::Username)
        );
        assert_eq!(
            check_policy(&"x".repeat(300), "a", 12),
            Err(PolicyError::TooLong)
        );
        assert_eq!(check_policy("tidal marble lantern", "alice", 12), Ok(()));
        assert_eq!(check_policy(&"é".repeat(64), "alice", 12), Ok(()));
    }

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = HashParams::default()
            .hash_blocking("tidal marble lantern")
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("tidal marble lantern", &phc));
        assert!(!verify_blocking("tidal marble lanterN", &phc));
        assert!(!verify_blocking("x", "not a hash"));
    }
}
