//! What protects a vCenter from vpoller, and vpoller's callers from a
//! vCenter that is down: the memory of failed logins and a circuit breaker.
//!
//! Both outlive any one session: the registry keeps one [`Guards`] per
//! agent and login details, and every session made for that agent shares
//! it. vCenter's SSO locks an account after 5 failed logins in 180 s by
//! default, so a wrong password must cost one Login per back-off step,
//! however many requests arrive; and a hung vCenter must cost each request
//! at most one deadline, then nothing while it stays down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fault::Error;

/// Tunables of the guards; the defaults keep an account under SSO's
/// default lockout policy.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    /// The wait after the first failed login; it doubles after each one.
    pub login_backoff: Duration,
    pub login_backoff_max: Duration,
    /// Consecutive transport failures (timeouts, refused connections)
    /// that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails calls at once before one probe is let
    /// through; it doubles while probes keep failing.
    pub breaker_cooldown: Duration,
    pub breaker_cooldown_max: Duration,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            // 0 s, 60 s, 180 s, 420 s: three attempts in SSO's 180 s window.
            login_backoff: Duration::from_secs(60),
            login_backoff_max: Duration::from_secs(900),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(5),
            breaker_cooldown_max: Duration::from_secs(60),
        }
    }
}

/// The guards of one agent.
#[derive(Debug, Default)]
pub struct Guards {
    pub options: GuardOptions,
    login: tokio::sync::Mutex<LoginMemory>,
    breaker: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct LoginMemory {
    failures: u32,
    /// Until when a Login is not tried, and why the last one failed.
    blocked: Option<(Instant, Error)>,
}

/// A login turn: held while one caller logs in, so that the others wait
/// for its outcome instead of trying their own.
pub struct LoginTurn<'a> {
    memory: tokio::sync::MutexGuard<'a, LoginMemory>,
    options: &'a GuardOptions,
}

impl LoginTurn<'_> {
    /// Remembers the outcome of the Login this turn made.
    pub fn record(&mut self, outcome: &Result<(), Error>) {
        match outcome {
            Ok(()) => *self.memory = LoginMemory::default(),
            // Only a refusal counts towards a lockout; a vCenter that could
            // not be reached is the breaker's business.
            Err(e @ Error::LoginFailed { .. }) => {
                self.memory.failures += 1;
                let steps = self.memory.failures.saturating_sub(1).min(16);
                let wait = self
                    .options
                    .login_backoff
                    .saturating_mul(1u32 << steps)
                    .min(self.options.login_backoff_max);
                self.memory.blocked = Some((Instant::now() + wait, remembered(e)));
            }
            Err(_) => {}
        }
    }
}

/// The error a caller gets while a failed login is remembered.
fn remembered(e: &Error) -> Error {
    match e {
        Error::LoginFailed { host, user, reason } => Error::LoginFailed {
            host: host.clone(),
            user: user.clone(),
            reason: reason.clone(),
        },
        other => Error::Config(other.to_string()),
    }
}

impl Guards {
    pub fn new(options: GuardOptions) -> Guards {
        Guards {
            options,
            ..Default::default()
        }
    }

    /// Waits for the login turn. While a failed login is remembered the
    /// answer is that failure, at once and without a Login.
    pub async fn login_turn(&self) -> Result<LoginTurn<'_>, Error> {
        let memory = self.login.lock().await;
        if let Some((until, error)) = &memory.blocked {
            let now = Instant::now();
            if now < *until {
                return Err(while_blocked(error, *until - now));
            }
        }
        Ok(LoginTurn {
            memory,
            options: &self.options,
        })
    }

    /// The remembered login failure, if a Login would not be tried now.
    pub fn login_blocked(&self) -> Option<Error> {
        let memory = self.login.try_lock().ok()?;
        let (until, error) = memory.blocked.as_ref()?;
        let now = Instant::now();
        (now < *until).then(|| while_blocked(error, *until - now))
    }

    /// May a call go to the vCenter now? `Err` while the circuit is open
    /// (or another caller's probe is out), with the failure that opened it.
    pub fn admit(&self, host: &str) -> Result<Admitted<'_>, Error> {
        self.admission(host).map(|kind| Admitted {
            guards: self,
            kind,
            reported: false,
        })
    }

    fn admission(&self, host: &str) -> Result<Admission, Error> {
        let Ok(mut b) = self.breaker.lock() else {
            return Ok(Admission::Normal);
        };
        let failures = b.consecutive;
        let Some(open) = &mut b.open else {
            return Ok(Admission::Normal);
        };
        let now = Instant::now();
        if now < open.until || open.probing {
            let wait = open.until.saturating_duration_since(now);
            return Err(Error::Unavailable {
                host: host.to_string(),
                failures,
                last: open.last.clone(),
                retry_in_secs: wait.as_secs_f64().ceil() as u64,
            });
        }
        open.probing = true;
        Ok(Admission::Probe)
    }

    /// A probe that ended without a report (its caller gave up): the next
    /// caller may probe.
    fn abandoned(&self, admission: Admission) {
        if admission == Admission::Probe
            && let Ok(mut b) = self.breaker.lock()
            && let Some(open) = &mut b.open
        {
            open.probing = false;
        }
    }

    /// Reports how an admitted call went: `reached` is true when the
    /// vCenter answered at all (a fault is an answer).
    fn report(&self, admission: Admission, reached: bool, failure: Option<&Error>) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        if reached {
            if b.open.is_some() {
                tracing::info!("vCenter answers again; circuit closed");
            }
            *b = BreakerState::default();
            return;
        }
        b.consecutive = b.consecutive.saturating_add(1);
        let last = failure.map(|e| e.to_string()).unwrap_or_default();
        let opens = b.consecutive >= self.options.breaker_threshold;
        match (&mut b.open, admission) {
            (Some(open), Admission::Probe) => {
                open.cooldown = (open.cooldown * 2).min(self.options.breaker_cooldown_max);
                open.until = Instant::now() + open.cooldown;
                open.probing = false;
                open.last = last;
            }
            (Some(open), Admission::Normal) => open.last = last,
            (None, _) if opens => {
                tracing::warn!(
                    failures = b.consecutive,
                    "vCenter unreachable; circuit open: {last}"
                );
                let cooldown = self.options.breaker_cooldown;
                b.open = Some(Open {
                    until: Instant::now() + cooldown,
                    cooldown,
                    probing: false,
                    last,
                });
            }
            (None, _) => {}
        }
    }

    /// True while calls are being refused.
    pub fn circuit_open(&self) -> bool {
        self.breaker
            .lock()
            .map(|b| b.open.is_some())
            .unwrap_or(false)
    }
}

fn while_blocked(error: &Error, left: Duration) -> Error {
    match error {
        Error::LoginFailed { host, user, reason } => Error::LoginFailed {
            host: host.clone(),
            user: user.clone(),
            reason: format!(
                "{reason} (remembered: the next attempt is in {} s; fix the password with `vpoller agent update` to retry at once)",
                left.as_secs().max(1)
            ),
        },
        other => Error::Config(other.to_string()),
    }
}

/// A call let through; say how it went with [`Admitted::report`]. Dropped
/// unreported (the caller's future was cancelled), it frees the probe.
#[derive(Debug)]
pub struct Admitted<'g> {
    guards: &'g Guards,
    kind: Admission,
    reported: bool,
}

impl Admitted<'_> {
    pub fn kind(&self) -> Admission {
        self.kind
    }

    /// `reached`: the vCenter answered at all (a fault is an answer).
    pub fn report(mut self, reached: bool, failure: Option<&Error>) {
        self.reported = true;
        self.guards.report(self.kind, reached, failure);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.guards.abandoned(self.kind);
        }
    }
}

/// How a call was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The one call allowed through an open circuit to see if it recovered.
    Probe,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive: u32,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    until: Instant,
    cooldown: Duration,
    probing: bool,
    last: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        Error::LoginFailed {
            host: "vc01:443".into(),
            user: "monitor".into(),
            reason: "the user name or password is wrong (InvalidLogin)".into(),
        }
    }

    fn down() -> Error {
        Error::Timeout {
            host: "vc01:443".into(),
            after: Duration::from_secs(4),
        }
    }

    #[tokio::test]
    async fn a_refused_login_is_remembered_and_grows_its_wait() {
        let guards = Guards::new(GuardOptions {
            login_backoff: Duration::from_millis(40),
            ..Default::default()
        });
        let mut turn = guards.login_turn().await.expect("first turn");
        turn.record(&Err(refused()));
        drop(turn);
        let blocked = guards.login_turn().await.err().expect("remembered");
        assert!(blocked.to_string().contains("remembered"), "{blocked}");
        assert!(guards.login_blocked().is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut turn = guards.login_turn().await.expect("after the wait");
        turn.record(&Err(refused()));
        drop(turn);
        // The second wait is twice the first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(guards.login_turn().await.is_err());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut turn = guards.login_turn().await.expect("after the longer wait");
        turn.record(&Ok(()));
        drop(turn);
        assert!(guards.login_blocked().is_none());
    }

    #[tokio::test]
    async fn an_unreachable_vcenter_does_not_count_as_a_refused_login() {
        let guards = Guards::default();
        let mut turn = guards.login_turn().await.expect("turn");
        turn.record(&Err(down()));
        drop(turn);
        assert!(guards.login_turn().await.is_ok());
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() {
        let guards = Guards::new(GuardOptions {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_millis(30),
            ..Default::default()
        });
        for _ in 0..2 {
            let a = guards.admit("vc01").expect("closed");
            a.report(false, Some(&down()));
        }
        let refused = guards.admit("vc01").expect_err("open");
        assert!(refused.to_string().contains("vc01"), "{refused}");
        assert!(refused.to_string().contains("no answer"), "{refused}");
        std::thread::sleep(Duration::from_millis(40));
        let probe = guards.admit("vc01").expect("a probe after the cool-down");
        assert_eq!(probe.kind(), Admission::Probe);
        assert!(guards.admit("vc01").is_err(), "one probe at a time");
        drop(probe);
        let probe = guards
            .admit("vc01")
            .expect("a probe whose caller gave up frees the way");
        probe.report(true, None);
        assert_eq!(
            guards.admit("vc01").expect("closed again").kind(),
            Admission::Normal
        );
        assert!(!guards.circuit_open());
    }
}
