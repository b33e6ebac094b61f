//! Fair sharing of a GPU's decoder sessions between requests.
//!
//! A GPU runs at most `permits` NVDEC sessions at once (enough to keep every engine
//! busy; more only adds decoder memory). Each request's workers take a permit per
//! segment. When a permit frees, it goes to the waiting request that holds the fewest,
//! the earliest-waiting first among equals: a request that arrives while a long video
//! decodes gets a share at the next segment boundary instead of queueing behind it, and
//! concurrent requests converge to equal shares.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Permits shared fairly between requests (see the module docs).
pub struct FairShare {
    permits: usize,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    held: usize,
    /// Permits held per request.
    by_request: Vec<(u64, usize)>,
    /// Waiting workers: (request, arrival).
    waiting: Vec<(u64, u64)>,
    arrivals: u64,
}

impl State {
    fn held_by(&self, request: u64) -> usize {
        self.by_request
            .iter()
            .find(|(r, _)| *r == request)
            .map_or(0, |(_, n)| *n)
    }

    /// The waiter next in line: fewest permits held, then earliest.
    fn next_in_line(&self) -> Option<(u64, u64)> {
        self.waiting
            .iter()
            .copied()
            .min_by_key(|&(r, arrival)| (self.held_by(r), arrival))
    }
}

/// A held permit; dropping it gives it back.
pub struct Permit<'a> {
    share: &'a FairShare,
    request: u64,
}

impl FairShare {
    /// `permits` sessions at once (at least one).
    pub fn new(permits: usize) -> Self {
        Self {
            permits: permits.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// Permits in all.
    pub fn permits(&self) -> usize {
        self.permits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no panics while holding the lock")
    }

    /// Waits for a permit for `request` (any id that tells requests apart).
    pub fn acquire(&self, request: u64) -> Permit<'_> {
        let mut s = self.lock();
        let me = (request, s.arrivals);
        s.arrivals += 1;
        s.waiting.push(me);
        while !(s.held < self.permits && s.next_in_line() == Some(me)) {
            s = self
                .freed
                .wait(s)
                .expect("no panics while holding the lock");
        }
        s.waiting.retain(|w| *w != me);
        s.held += 1;
        match s.by_request.iter_mut().find(|(r, _)| *r == request) {
            Some((_, n)) => *n += 1,
            None => s.by_request.push((request, 1)),
        }
        drop(s);
        // Another permit may be free for the next in line.
        self.freed.notify_all();
        Permit {
            share: self,
            request,
        }
    }

    /// Permits held now by `request`.
    #[cfg(test)]
    fn held_by(&self, request: u64) -> usize {
        self.lock().held_by(request)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.share.lock();
        s.held -= 1;
        if let Some(i) = s.by_request.iter().position(|(r, _)| *r == self.request) {
            s.by_request[i].1 -= 1;
            if s.by_request[i].1 == 0 {
                s.by_request.swap_remove(i);
            }
        }
        drop(s);
        self.share.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn never_more_than_the_permits() {
        let share = FairShare::new(3);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for r in 0..4u64 {
                for _ in 0..4 {
                    let (share, now, peak) = (&share, &now, &peak);
                    s.spawn(move || {
                        for _ in 0..20 {
                            let _p = share.acquire(r);
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            now.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(share.lock().held, 0);
        assert!(share.lock().by_request.is_empty());
    }

    /// A request arriving while another holds every permit gets one as soon as one frees,
    /// and then an equal share; it finishes long before the long request.
    #[test]
    fn a_late_short_request_is_not_stuck_behind_a_long_one() {
        let share = FairShare::new(4);
        let segment = Duration::from_millis(10);
        let long_done = Mutex::new(None);
        let short_done = Mutex::new(None);
        let short_peak = AtomicUsize::new(0);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            // The long request: 8 workers, 12 segments each.
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..12 {
                        let _p = share.acquire(1);
                        std::thread::sleep(segment);
                    }
                    *long_done.lock().unwrap() = Some(t0.elapsed());
                });
            }
            std::thread::sleep(3 * segment);
            // The short request: 4 workers, 2 segments each.
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2 {
                        let _p = share.acquire(2);
                        short_peak.fetch_max(share.held_by(2), Ordering::SeqCst);
                        std::thread::sleep(segment);
                    }
                    *short_done.lock().unwrap() = Some(t0.elapsed());
                });
            }
        });
        let (long, short) = (
            long_done.into_inner().unwrap().unwrap(),
            short_done.into_inner().unwrap().unwrap(),
        );
        // The long request needs 96 / 4 = 24 segment times; the short one, arriving at 3,
        // needs 8 segments at half the permits: it ends near 7, not after 24.
        assert!(short < long, "short {short:?} vs long {long:?}");
        assert!(
            short_peak.load(Ordering::SeqCst) >= 2,
            "the short request got a share"
        );
    }
}
