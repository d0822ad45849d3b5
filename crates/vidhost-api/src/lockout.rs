//! Wrong passwords per (account, client address): every `every`-th in a row
//! locks that address out of that account for a minute, doubling with each
//! lockout up to an hour; a right password clears it. Keyed by the address
//! too, so nobody can lock someone else out of their own account (a lock
//! per account alone lets anyone keep any account, an admin's included,
//! locked with a few requests an hour). Kept in each process, like the
//! address buckets: spread over n nodes, a guesser gets n times the tries.
//! At most [`MAX_ENTRIES`] are kept (each e-mail tried is one, whether or
//! not it has an account): past that, the oldest one that locks nothing
//! makes room, so guesses at made-up e-mails cannot grow the process
//! without bound, nor push out a lock that is running while any entry
//! locks nothing (only a map of 100,000 running locks, each `every` wrong
//! passwords, gives up the one that ends first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(60);
const MAX_LOCK: Duration = Duration::from_secs(3600);
/// About 30 MiB at the longest e-mail addresses.
pub const MAX_ENTRIES: usize = 100_000;

struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

pub struct Lockout {
    every: u32,
    max_entries: usize,
    map: Mutex<HashMap<(String, IpAddr), Entry>>,
}

impl Lockout {
    pub fn new(every: u32) -> Lockout {
        Lockout::bounded(every, MAX_ENTRIES)
    }

    fn bounded(every: u32, max_entries: usize) -> Lockout {
        Lockout {
            every: every.max(1),
            max_entries: max_entries.max(1),
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
        let key = (user.to_owned(), ip);
        if map.len() >= self.max_entries && !map.contains_key(&key) {
            make_room(&mut map, now);
        }
        let e = map.entry(key).or_insert(Entry {
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
        forget_stale(&mut self.map.lock().expect("not poisoned"), Instant::now());
    }
}

type Map = HashMap<(String, IpAddr), Entry>;

fn locks(e: &Entry, now: Instant) -> bool {
    e.locked_until.is_some_and(|t| t > now)
}

fn forget_stale(map: &mut Map, now: Instant) {
    map.retain(|_, e| locks(e, now) || now.duration_since(e.last) < MAX_LOCK);
}

/// Frees one entry of a full map: a stale one, else the one that locks
/// nothing and failed longest ago, else (every entry a running lock) the
/// one whose lock ends first. A scan, at most once per wrong password,
/// which costs an Argon2 hash anyway.
fn make_room(map: &mut Map, now: Instant) {
    let before = map.len();
    forget_stale(map, now);
    if map.len() < before {
        return;
    }
    let victim = map
        .iter()
        .filter(|(_, e)| !locks(e, now))
        .min_by_key(|(_, e)| e.last)
        .or_else(|| map.iter().min_by_key(|(_, e)| e.locked_until))
        .map(|(k, _)| k.clone());
    if let Some(k) = victim {
        map.remove(&k);
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

    #[test]
    fn made_up_emails_stay_bounded_and_never_push_out_a_lock() {
        let l = Lockout::bounded(3, 10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.failed("victim", ip);
        }
        assert!(l.locked("victim", ip).is_some());
        for i in 0..1000 {
            l.failed(&format!("no-account:guess{i}@example.com"), ip);
            assert!(l.map.lock().unwrap().len() <= 10);
        }
        assert!(l.locked("victim", ip).is_some(), "the running lock is kept");
        // The newest guesses are the ones counted: two more on the last one
        // make three, a lock.
        l.failed("no-account:guess999@example.com", ip);
        l.failed("no-account:guess999@example.com", ip);
        assert!(l.locked("no-account:guess999@example.com", ip).is_some());
    }
}
