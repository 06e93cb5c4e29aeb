//! The applet in a card slot, and card transports as an APDU relay.

use kessai_card::harness::ApduTransport;
use kessai_card::{Card, Nvm};
use kessai_card_io::{CardSlot, CardTransport, TransportError};

/// A [`Card`] in a reader slot: power, reset and APDUs, for the in-process
/// transport and the vpcd virtual reader.
#[derive(Debug)]
pub struct EmulatedCard<N: Nvm>(pub Card<N>);

impl<N: Nvm> CardSlot for EmulatedCard<N> {
    fn power_on(&mut self) -> Vec<u8> {
        self.0.power_on()
    }

    fn power_off(&mut self) {
        self.0.power_off();
    }

    fn reset(&mut self) -> Vec<u8> {
        // A warm reset loses volatile state exactly like a cold one here.
        self.0.power_off();
        self.0.power_on()
    }

    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        self.0.transmit(command)
    }
}

/// Lets the host-side driver ([`kessai_card::harness::HostDriver`]) talk to
/// a card through any [`CardTransport`] (PC/SC reader, in-process slot):
/// the relay sees only the APDUs the host built. A transport failure (card
/// removed, reader gone) is kept in [`Relay::last_error`] and answered with
/// an empty response, which the driver refuses as malformed.
#[derive(Debug)]
pub struct Relay<T: CardTransport> {
    transport: T,
    last_error: Option<TransportError>,
}

impl<T: CardTransport> Relay<T> {
    /// Wraps a transport.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            last_error: None,
        }
    }

    /// The last transport failure, if any.
    pub fn last_error(&self) -> Option<&TransportError> {
        self.last_error.as_ref()
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
}

impl<T: CardTransport> ApduTransport for Relay<T> {
    fn transmit_apdu(&mut self, command: &[u8]) -> Vec<u8> {
        match self.transport.transmit(command) {
            Ok(r) => r,
            Err(e) => {
                self.last_error = Some(e);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kessai_card::harness::HostDriver;
    use kessai_card::{MemNvm, PersonalizationParams, issuer_card_keys};
    use kessai_card_io::InProcess;
    use kessai_money::Currency;
    use kessai_scp03::{AesKey, SecurityLevel};

    fn card() -> (EmulatedCard<MemNvm>, kessai_card::IssuerCardKeys) {
        let jpy = Currency::from_code("JPY").unwrap();
        let keys = issuer_card_keys(&AesKey::Aes128([5; 16]), &"card-1".parse().unwrap(), 1);
        let p = PersonalizationParams::new(
            "card-1".parse().unwrap(),
            keys.clone(),
            jpy,
            10_000,
            [1; 32],
        );
        (
            EmulatedCard(Card::personalize(p, MemNvm::new()).unwrap()),
            keys,
        )
    }

    #[test]
    fn host_driver_runs_a_debit_through_a_relay() {
        let (slot, keys) = card();
        let mut relay = Relay::new(InProcess::new(slot));
        assert_eq!(relay.transport_mut().atr(), kessai_card::atr().as_slice());
        let mut host = HostDriver::new(keys.static_keys);
        host.select(&mut relay).unwrap();
        host.open(&mut relay, SecurityLevel::Full, [3; 8]).unwrap();
        host.credit(&mut relay, 5_000, [1; 16], [0; 16]).unwrap();
        let pcn = host.debit(&mut relay, 1_250, [2; 16], [0; 16]).unwrap();
        assert_eq!(pcn.balance_after_minor, 3_750);
        assert!(relay.last_error().is_none());
    }

    #[test]
    fn reset_drops_the_secure_session() {
        let (slot, keys) = card();
        let mut relay = Relay::new(InProcess::new(slot));
        let mut host = HostDriver::new(keys.static_keys);
        host.select(&mut relay).unwrap();
        host.open(&mut relay, SecurityLevel::Full, [3; 8]).unwrap();
        relay.transport_mut().reset().unwrap();
        // The card forgot the session: a purse command is refused.
        assert!(host.credit(&mut relay, 1, [1; 16], [0; 16]).is_err());
        assert_eq!(
            relay
                .transport_mut()
                .slot()
                .0
                .snapshot()
                .balance
                .amount_minor,
            0
        );
    }
}
