//! Interior locking for the stateful classes, so that one object can be shared between
//! Python threads: they are `#[pyclass(frozen)]` (no PyO3 borrow flag, so no
//! "Already borrowed") and keep their state behind a [`Shared`] lock.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;

/// A value behind a mutex that is taken without deadlocking against the GIL.
pub(crate) struct Shared<T>(Mutex<T>);

impl<T: Send> Shared<T> {
    pub(crate) fn new(value: T) -> Self {
        Shared(Mutex::new(value))
    }

    /// Locks the value.  Uncontended this is one atomic operation.  Contended, it waits
    /// with the GIL released: the holder may be working without the GIL and need it back
    /// before it unlocks.  A panic in an earlier holder (already raised to Python as
    /// `PanicException`) does not make the object unusable: every operation leaves the
    /// state consistent before anything that could panic.
    ///
    /// Callers take every Python-side resource (buffer views) before locking, so no
    /// Python code runs while the lock is held and a re-entrant call cannot deadlock.
    pub(crate) fn lock(&self, py: Python<'_>) -> MutexGuard<'_, T> {
        loop {
            match self.0.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => py.detach(|| drop(self.0.lock())),
            }
        }
    }
}
