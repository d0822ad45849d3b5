//! Wrong passwords per (account, client address): every `every`-th in a row
//! locks that address out of that account for a minute, doubling with each
//! lockout up to an hour; a right password clears it. Keyed by the address
//! too, so nobody can lock someone else out of their own account (a lock
//! per account alone lets anyone keep any account, an admin's included,
//! locked with a few requests an hour). Kept in each process, like the
//! address buckets: spread over n nodes, a guesser gets n times the tries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(60);
const MAX_LOCK: Duration = Duration::from_secs(3600);

struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

pub struct Lockout {
    every: u32,
    map: Mutex<HashMap<(String, IpAddr), Entry>>,
}

impl Lockout {
    pub fn new(every: u32) -> Lockout {
        Lockout {
            every: every.max(1),
            map: Mutex::default(),
        }
    }

    /// How long `ip` is still locked out of `user`, if it is.
    pub fn locked(&self, user: &str, ip: IpAddr) -> Option<Duration> {
        let map = self.map.lock().expect("not poisoned");
        let until = map.get(&(user.to_owned(), ip))?.locked_until?;
        until.checked_duration_since(Instant::now())
    }

    pub fn failed(&self, user: &str, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.map.lock().expect("not poisoned");
        let e = map.entry((user.to_owned(), ip)).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last: now,
        });
        e.failures += 1;
        e.last = now;
        if e.failures.is_multiple_of(self.every) {
            let doublings = (e.failures / self.every - 1).min(16);
            e.locked_until = Some(now + (LOCK * (1 << doublings)).min(MAX_LOCK));
        }
    }

    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.map
            .lock()
            .expect("not poisoned")
            .remove(&(user.to_owned(), ip));
    }

    /// Forgets entries that lock nothing and saw no failure for an hour.
    pub fn upkeep(&self) {
        let now = Instant::now();
        self.map.lock().expect("not poisoned").retain(|_, e| {
            e.locked_until.is_some_and(|t| t > now) || now.duration_since(e.last) < MAX_LOCK
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_per_account_and_address_and_clears_on_success() {
        let l = Lockout::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.locked("u", a).is_none());
            l.failed("u", a);
        }
        let left = l.locked("u", a).unwrap();
        assert!(left > Duration::from_secs(55) && left <= LOCK);
        // Another address, or another account, is not locked.
        assert!(l.locked("u", b).is_none());
        assert!(l.locked("v", a).is_none());
        // The next lockout is twice as long.
        for _ in 0..3 {
            l.failed("u", a);
        }
        assert!(l.locked("u", a).unwrap() > Duration::from_secs(115));
        l.succeeded("u", a);
        assert!(l.locked("u", a).is_none());
    }
}
