//! Fair sharing of a GPU's decoder sessions between requests.
//!
//! A GPU runs at most `permits` NVDEC sessions at once (enough to keep every engine
//! busy; more only adds decoder memory). Each request's workers take a permit per
//! segment. When a permit frees, it goes to the waiting request that holds the fewest,
//! the earliest-waiting first among equals: a request that arrives while a long video
//! decodes gets a share at the next segment boundary instead of queueing behind it, and
//! concurrent requests converge to equal shares.
//!
//! A freed permit is handed straight to the waiter next in line, which alone is woken:
//! with 64 requests of 15 segments each ~1000 workers wait, and waking all of them at
//! every release (each rescanning the queue under the lock) costs more CPU than the
//! decoding it schedules.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Permits shared fairly between requests (see the module docs).
pub struct FairShare {
    permits: usize,
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Requests that hold or wait for permits.
    requests: Vec<Request>,
    arrivals: u64,
}

struct Request {
    id: u64,
    held: usize,
    /// Its waiting workers, earliest first.
    waiting: VecDeque<Waiter>,
}

struct Waiter {
    arrival: u64,
    wake: Arc<Wake>,
}

/// How a waiting worker is told that it was given a permit.
#[derive(Default)]
struct Wake {
    /// Set under the share's lock.
    granted: std::sync::atomic::AtomicBool,
    cv: Condvar,
}

impl State {
    fn request(&mut self, id: u64) -> &mut Request {
        let i = match self.requests.iter().position(|r| r.id == id) {
            Some(i) => i,
            None => {
                self.requests.push(Request {
                    id,
                    held: 0,
                    waiting: VecDeque::new(),
                });
                self.requests.len() - 1
            }
        };
        &mut self.requests[i]
    }

    /// Gives free permits to the waiters next in line (fewest held, then earliest).
    fn grant(&mut self) {
        while self.free > 0 {
            let Some(next) = self
                .requests
                .iter_mut()
                .filter(|r| !r.waiting.is_empty())
                .min_by_key(|r| (r.held, r.waiting[0].arrival))
            else {
                return;
            };
            let waiter = next.waiting.pop_front().expect("a waiting worker");
            next.held += 1;
            self.free -= 1;
            waiter
                .wake
                .granted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            waiter.wake.cv.notify_one();
        }
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
        let permits = permits.max(1);
        Self {
            permits,
            state: Mutex::new(State {
                free: permits,
                requests: Vec::new(),
                arrivals: 0,
            }),
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
        // Permits are handed out as they free, so a free one means nobody waits.
        if s.free > 0 {
            s.free -= 1;
            s.request(request).held += 1;
        } else {
            let wake = Arc::new(Wake::default());
            let arrival = s.arrivals;
            s.arrivals += 1;
            s.request(request).waiting.push_back(Waiter {
                arrival,
                wake: wake.clone(),
            });
            let _granted = wake
                .cv
                .wait_while(s, |_| {
                    !wake.granted.load(std::sync::atomic::Ordering::Relaxed)
                })
                .expect("no panics while holding the lock");
        }
        Permit {
            share: self,
            request,
        }
    }

    /// Permits held now by `request`.
    #[cfg(test)]
    fn held_by(&self, request: u64) -> usize {
        let s = self.lock();
        s.requests
            .iter()
            .find(|r| r.id == request)
            .map_or(0, |r| r.held)
    }

    /// Workers waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().requests.iter().map(|r| r.waiting.len()).sum()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.share.lock();
        s.free += 1;
        s.request(self.request).held -= 1;
        s.requests.retain(|r| r.held > 0 || !r.waiting.is_empty());
        s.grant();
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
        assert_eq!(share.lock().free, 3);
        assert!(share.lock().requests.is_empty());
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

    /// A freed permit goes to the waiter of the request holding fewest, earliest first
    /// among equals, and only one waiter is given each permit.
    #[test]
    fn a_freed_permit_goes_to_the_fewest_held_then_earliest() {
        let share = FairShare::new(2);
        let order = Mutex::new(Vec::new());
        let release = std::sync::atomic::AtomicBool::new(false);
        let (a1, a2) = (share.acquire(1), share.acquire(1));
        std::thread::scope(|s| {
            let wait_for = |n: usize| {
                while share.waiting() < n {
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            for (n, (request, name)) in [(1, "a3"), (2, "b1"), (2, "b2")].into_iter().enumerate() {
                let (share, order, release) = (&share, &order, &release);
                s.spawn(move || {
                    let _p = share.acquire(request);
                    order.lock().unwrap().push(name);
                    // Held until the test has seen the first two grants.
                    while !release.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                wait_for(n + 1);
            }
            // Request 1 holds 1 after this, request 2 none: b1 goes first.
            drop(a1);
            while order.lock().unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Now both hold 1: a3 waited longer than b2.
            drop(a2);
            while order.lock().unwrap().len() < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(share.waiting(), 1);
            assert_eq!(*order.lock().unwrap(), ["b1", "a3"]);
            release.store(true, Ordering::SeqCst);
        });
        // b2 got the permit of whichever finished first.
        assert_eq!(*order.lock().unwrap(), ["b1", "a3", "b2"]);
        assert_eq!(share.lock().free, 2);
    }
}
