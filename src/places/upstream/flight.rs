//! Single-flight: identical lookups in flight at once share one upstream
//! call. The table of lookups in flight by query key, the flight every
//! caller of one key waits on, and the guard that publishes its answer and
//! takes it out of the table when its task ends, however it ends.
//!
//! Separate because the guarantees are subtle and independent of HTTP: the
//! call runs in its own task, so a caller dropping its future (a client
//! hanging up) cannot strand the others, and every waiter gets an answer
//! even if the task is cancelled or panics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use event_listener::Event;

use crate::places::key::QueryKey;
use crate::places::rendered::error_answer;
use crate::places::rendered::RenderedAnswer;

/// Lookups in flight, by cache key.
#[derive(Default)]
pub(super) struct Flights {
    /// One flight per key in flight.
    table: RefCell<HashMap<QueryKey, Rc<Flight>, ahash::RandomState>>,
}

impl Flights {
    /// The flight for `key`, if one is in flight.
    pub(super) fn get(&self, key: &QueryKey) -> Option<Rc<Flight>> {
        self.table.borrow().get(key).cloned()
    }

    /// Starts the one lookup for `key`: runs `fetch` in its own task, so that a
    /// caller dropping its future (e.g. a client hanging up) cannot strand the others.
    pub(super) fn start(
        self: &Rc<Self>,
        key: QueryKey,
        fetch: impl Future<Output = Rc<RenderedAnswer>> + 'static,
    ) -> Rc<Flight> {
        let flight = Rc::new(Flight::default());
        self.table.borrow_mut().insert(key, Rc::clone(&flight));
        let guard = FlightGuard {
            flights: Rc::clone(self),
            flight: Rc::clone(&flight),
            key,
            answer: None,
        };
        glommio::spawn_local(async move {
            guard.finish(fetch.await);
        })
        .detach();
        flight
    }
}

/// A lookup in flight: the answer once known, and the event that announces it.
#[derive(Default)]
pub(super) struct Flight {
    /// Set exactly once, by the `FlightGuard`.
    answer: RefCell<Option<Rc<RenderedAnswer>>>,
    /// Notified once the answer is set.
    done: Event,
}

impl Flight {
    /// The answer, once the lookup ends.
    pub(super) async fn wait(&self) -> Rc<RenderedAnswer> {
        // Two turns suffice: a listener made before the second check cannot miss the
        // notification, and the answer is set before anyone is notified.
        for _ in 0..2 {
            if let Some(answer) = self.answer.borrow().clone() {
                return answer;
            }
            let listener = self.done.listen();
            if let Some(answer) = self.answer.borrow().clone() {
                return answer;
            }
            listener.await;
        }
        let answer = self.answer.borrow().clone();
        answer.unwrap_or_else(|| {
            Rc::new(RenderedAnswer::render(&error_answer(
                "UNKNOWN_ERROR",
                "places lookup ended without an answer",
            )))
        })
    }
}

/// Publishes a flight's answer when dropped, even if its task was cancelled or panicked,
/// so waiters are never left hanging.
struct FlightGuard {
    /// The table that holds this flight.
    flights: Rc<Flights>,
    /// The flight to finish.
    flight: Rc<Flight>,
    /// Its key in the flight table.
    key: QueryKey,
    /// The answer, once the lookup produced one.
    answer: Option<Rc<RenderedAnswer>>,
}

impl FlightGuard {
    /// Records the answer; dropping the guard then publishes it to every waiter.
    fn finish(mut self, answer: Rc<RenderedAnswer>) {
        self.answer = Some(answer);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Remove first: a caller arriving after this must use the cache or start anew.
        if let Ok(mut table) = self.flights.table.try_borrow_mut() {
            table.remove(&self.key);
        }
        let answer = self.answer.take().unwrap_or_else(|| {
            Rc::new(RenderedAnswer::render(&error_answer(
                "UNKNOWN_ERROR",
                "places lookup was cancelled",
            )))
        });
        if let Ok(mut slot) = self.flight.answer.try_borrow_mut() {
            *slot = Some(answer);
        }
        self.flight.done.notify(usize::MAX);
    }
}
