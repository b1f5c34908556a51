//! Caps on the streams one principal or one client address may hold open at once, so that one
//! user or one host cannot take a server's connections for itself.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::rejection::{ConnectRejection, StreamHolder};
use crate::sync::lock;

/// The caps and how many streams each holder has open. Only a server with a cap has one, so a
/// server without pays nothing per stream.
pub(crate) struct Quotas {
    per_principal: Option<usize>,
    per_address: Option<usize>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_principal: HashMap<Arc<str>, usize>,
    by_address: HashMap<IpAddr, usize>,
    /// The address each counted stream came from, by serial, to count it out when it closes.
    address_of: HashMap<u64, IpAddr>,
}

/// A stream's holders, as the caps count them.
#[derive(Clone, Copy)]
pub(crate) struct Holders<'a> {
    pub(crate) principal: Option<&'a Arc<str>>,
    pub(crate) address: Option<IpAddr>,
}

impl Quotas {
    /// Caps streams per principal and per address; `None` unless one of them is set.
    pub(crate) fn new(per_principal: Option<usize>, per_address: Option<usize>) -> Option<Self> {
        (per_principal.is_some() || per_address.is_some()).then(|| Self {
            per_principal,
            per_address,
            open: Mutex::default(),
        })
    }

    /// Counts stream `serial` in for `holders`, unless that passes a cap. `replacing` is the
    /// open stream it replaces (same `clientId`), whose place it takes: that one is counted out
    /// when it closes, a moment later, and does not count against its successor.
    pub(crate) fn take(
        &self,
        serial: u64,
        holders: Holders<'_>,
        replacing: Option<(u64, Holders<'_>)>,
    ) -> Result<(), ConnectRejection> {
        let mut open = lock(&self.open);
        let principal = holders.principal.filter(|_| self.per_principal.is_some());
        let address = holders.address.filter(|_| self.per_address.is_some());
        let replaced = |same: bool| usize::from(same);
        if let (Some(principal), Some(limit)) = (principal, self.per_principal) {
            let held = open.by_principal.get(principal).copied().unwrap_or(0);
            let freed =
                replaced(replacing.is_some_and(|(_, old)| old.principal == Some(principal)));
            if held.saturating_sub(freed) >= limit {
                return Err(ConnectRejection::TooManyStreams {
                    holder: StreamHolder::Principal,
                    limit,
                });
            }
        }
        if let (Some(address), Some(limit)) = (address, self.per_address) {
            let held = open.by_address.get(&address).copied().unwrap_or(0);
            let freed = replaced(
                replacing.is_some_and(|(old, _)| open.address_of.get(&old) == Some(&address)),
            );
            if held.saturating_sub(freed) >= limit {
                return Err(ConnectRejection::TooManyStreams {
                    holder: StreamHolder::Address,
                    limit,
                });
            }
        }
        if let Some(principal) = principal {
            *open.by_principal.entry(principal.clone()).or_default() += 1;
        }
        if let Some(address) = address {
            *open.by_address.entry(address).or_default() += 1;
            open.address_of.insert(serial, address);
        }
        Ok(())
    }

    /// Counts stream `serial`, held by `principal`, out.
    pub(crate) fn release(&self, serial: u64, principal: Option<&Arc<str>>) {
        let mut open = lock(&self.open);
        if let Some(principal) = principal.filter(|_| self.per_principal.is_some())
            && let Some(count) = open.by_principal.get_mut(principal)
        {
            *count -= 1;
            if *count == 0 {
                open.by_principal.remove(principal);
            }
        }
        if let Some(address) = open.address_of.remove(&serial)
            && let Some(count) = open.by_address.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&address);
            }
        }
    }
}

impl fmt::Debug for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = lock(&self.open);
        f.debug_struct("Quotas")
            .field("per_principal", &self.per_principal)
            .field("per_address", &self.per_address)
            .field("principals", &open.by_principal.len())
            .field("addresses", &open.by_address.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn by(principal: Option<&Arc<str>>, address: Option<IpAddr>) -> Holders<'_> {
        Holders { principal, address }
    }

    #[test]
    fn each_cap_counts_its_holder_and_frees_a_place_on_release() {
        let quotas = Quotas::new(Some(2), Some(3)).unwrap();
        let ada: Arc<str> = "ada".into();
        let bob: Arc<str> = "bob".into();
        assert!(quotas.take(1, by(Some(&ada), Some(HOME)), None).is_ok());
        assert!(quotas.take(2, by(Some(&ada), Some(HOME)), None).is_ok());
        let third = quotas.take(3, by(Some(&ada), Some(HOME)), None);
        assert!(matches!(
            third,
            Err(ConnectRejection::TooManyStreams {
                holder: StreamHolder::Principal,
                limit: 2
            })
        ));
        assert!(quotas.take(4, by(Some(&bob), Some(HOME)), None).is_ok());
        let fourth_here = quotas.take(5, by(Some(&bob), Some(HOME)), None);
        assert!(matches!(
            fourth_here,
            Err(ConnectRejection::TooManyStreams {
                holder: StreamHolder::Address,
                limit: 3
            })
        ));
        quotas.release(1, Some(&ada));
        assert!(quotas.take(6, by(Some(&ada), Some(HOME)), None).is_ok());
    }

    #[test]
    fn a_replacement_takes_its_predecessors_place() {
        let quotas = Quotas::new(Some(1), Some(1)).unwrap();
        let ada: Arc<str> = "ada".into();
        assert!(quotas.take(1, by(Some(&ada), Some(HOME)), None).is_ok());
        let replacing = Some((1, by(Some(&ada), Some(HOME))));
        assert!(
            quotas
                .take(2, by(Some(&ada), Some(HOME)), replacing)
                .is_ok()
        );
        quotas.release(1, Some(&ada));
        // Now only the successor is counted.
        assert!(quotas.take(3, by(Some(&ada), None), None).is_err());
        quotas.release(2, Some(&ada));
        assert!(quotas.take(3, by(Some(&ada), Some(HOME)), None).is_ok());
    }

    #[test]
    fn a_stream_without_the_holder_is_not_counted() {
        assert!(Quotas::new(None, None).is_none());
        let quotas = Quotas::new(Some(1), Some(1)).unwrap();
        for serial in 0..10 {
            assert!(quotas.take(serial, by(None, None), None).is_ok());
        }
    }
}
