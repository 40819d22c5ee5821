//! The operations both modes offer, so the component serves either behind one handle.

use crate::protocol::{Permit, Released, Status};
use crate::{multi, protocol, Error, Transport};

pub trait Api {
    fn acquire(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error>;
    fn release(&self, n: i64, own: &[u64], request: u64) -> Result<Released, Error>;
    fn release_permits(&self, tokens: &[u64]) -> Result<Vec<u64>, Error>;
    fn refresh(&self, tokens: &[u64]) -> Result<Vec<Permit>, Error>;
    fn permits(&self) -> Result<Vec<Permit>, Error>;
    fn value(&self) -> Result<u64, Error>;
    fn initial_value(&self) -> Result<u64, Error>;
    fn locked(&self) -> Result<bool, Error>;
    fn status(&self) -> Result<Status, Error>;
    fn set_permits(&self, value: i64, request: u64) -> Result<u64, Error>;
    fn add_permits(&self, delta: i64, request: u64) -> Result<u64, Error>;
}

/// Forwards every [`Api`] method to the type's inherent method of the same name.
macro_rules! forward {
    ($ty:ty) => {
        impl<T: Transport> Api for $ty {
            fn acquire(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
                Self::acquire(self, n, blocking, timeout)
            }
            fn release(&self, n: i64, own: &[u64], request: u64) -> Result<Released, Error> {
                Self::release(self, n, own, request)
            }
            fn release_permits(&self, tokens: &[u64]) -> Result<Vec<u64>, Error> {
                Self::release_permits(self, tokens)
            }
            fn refresh(&self, tokens: &[u64]) -> Result<Vec<Permit>, Error> {
                Self::refresh(self, tokens)
            }
            fn permits(&self) -> Result<Vec<Permit>, Error> {
                Self::permits(self)
            }
            fn value(&self) -> Result<u64, Error> {
                Self::value(self)
            }
            fn initial_value(&self) -> Result<u64, Error> {
                Self::initial_value(self)
            }
            fn locked(&self) -> Result<bool, Error> {
                Self::locked(self)
            }
            fn status(&self) -> Result<Status, Error> {
                Self::status(self)
            }
            fn set_permits(&self, value: i64, request: u64) -> Result<u64, Error> {
                Self::set_permits(self, value, request)
            }
            fn add_permits(&self, delta: i64, request: u64) -> Result<u64, Error> {
                Self::add_permits(self, delta, request)
            }
        }
    };
}

forward!(protocol::Semaphore<T>);
forward!(multi::Semaphore<T>);
