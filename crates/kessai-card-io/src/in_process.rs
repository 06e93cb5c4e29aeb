//! A client talking straight to a card slot in the same process.

use crate::{CardSlot, CardTransport, TransportError};

/// [`CardTransport`] over a [`CardSlot`] in the same process: the card is
/// powered on when the transport is made, every `transmit` is a direct call.
///
/// Useful for unit tests and the all-in-one demo, where the wallet and the
/// card emulator live in one process. Behaves like a reader: responses
/// shorter than a status word are refused with
/// [`TransportError::ResponseTooShort`].
#[derive(Debug)]
pub struct InProcess<S: CardSlot> {
    /// The card.
    slot: S,
    /// ATR from the last power-on or reset.
    atr: Vec<u8>,
}

impl<S: CardSlot> InProcess<S> {
    /// Powers the card on ("inserts" it) and keeps its ATR.
    pub fn new(mut slot: S) -> Self {
        let atr = slot.power_on();
        Self { slot, atr }
    }

    /// The card, for inspection in tests.
    pub fn slot(&self) -> &S {
        &self.slot
    }

    /// The card, mutably (e.g. to inject faults in tests).
    pub fn slot_mut(&mut self) -> &mut S {
        &mut self.slot
    }

    /// Powers the card off ("removes" it) and returns it.
    pub fn into_inner(mut self) -> S {
        self.slot.power_off();
        self.slot
    }
}

impl<S: CardSlot> CardTransport for InProcess<S> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let response = self.slot.transmit(command);
        if response.len() < 2 {
            return Err(TransportError::ResponseTooShort);
        }
        Ok(response)
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn reset(&mut self) -> Result<(), TransportError> {
        self.atr = self.slot.reset();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EchoSlot;

    /// A slot that answers with whatever it was told to, to test the
    /// transport's own checks.
    struct Scripted(Vec<u8>);
    impl CardSlot for Scripted {
        fn power_on(&mut self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn power_off(&mut self) {}
        fn reset(&mut self) -> Vec<u8> {
            vec![0x3B, 0x01]
        }
        fn transmit(&mut self, _command: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
    }

    #[test]
    fn powers_on_at_creation_and_tracks_atr_across_reset() {
        let mut t = InProcess::new(Scripted(vec![0x90, 0x00]));
        assert_eq!(t.atr(), [0x3B, 0x00]);
        t.reset().unwrap();
        assert_eq!(t.atr(), [0x3B, 0x01]);
    }

    #[test]
    fn refuses_responses_without_status_word() {
        let mut t = InProcess::new(Scripted(vec![0x90]));
        assert_eq!(
            t.transmit(&[0, 0, 0, 0]),
            Err(TransportError::ResponseTooShort)
        );
        t.slot_mut().0 = vec![];
        assert_eq!(
            t.transmit(&[0, 0, 0, 0]),
            Err(TransportError::ResponseTooShort)
        );
        t.slot_mut().0 = vec![0x6A, 0x82];
        assert_eq!(t.transmit(&[0, 0, 0, 0]).unwrap(), [0x6A, 0x82]);
    }

    #[test]
    fn power_state_follows_the_transport() {
        let mut t = InProcess::new(EchoSlot::new());
        assert_eq!(t.slot().power_ons(), 1);
        assert!(t.slot().is_powered());
        t.transmit(&[0x00, 0xCA, 0x00, 0x01, 0x00]).unwrap();
        t.reset().unwrap();
        assert_eq!(t.slot().resets(), 1);
        let slot = t.into_inner();
        assert!(!slot.is_powered());
    }

    #[test]
    fn works_through_a_trait_object() {
        let mut t: Box<dyn CardTransport> = Box::new(InProcess::new(EchoSlot::new()));
        assert_eq!(
            t.transmit(&[0x80, 0xEE, 0, 0, 1, 0x42]).unwrap(),
            [0x42, 0x90, 0x00]
        );
    }
}
