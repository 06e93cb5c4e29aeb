//! The card reader plugged into the phone (the seed's カードリーダ装置 1,
//! figures 1, 6 and 7): card read unit 11, PIN pad 12, display 13,
//! encryption unit 14. The communication unit 15 is the caller: it hands
//! this type the bytes the phone relays and takes back what to send.
//!
//! Pure emulator: the card is an [`EmulatedCard`] record, the PIN pad is
//! injected digits, the display is a `Vec<String>`, randomness is
//! injected. A real reader would implement the same steps.
//!
//! The reader trusts only the issuer keys it was built with: it verifies
//! the host's signature on the transaction key (S34) and on the PIN prompt
//! before showing or encrypting anything, keeps the transaction key in
//! memory only, and discards it — with the card data and PIN key — on the
//! completion notice (S45).

use std::fmt;

use kessai_pin::{PinKey, encipher_pin_block};
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::FlowError;
use crate::artefacts::{
    CardData, Outcome, PhoneCompletion, PinPrompt, TransactionKey, TrustedKeys, seal_card_data,
    seal_pin_block, validate_yymm,
};
use crate::ids::ArtefactDigest;

/// What the card read unit reads from a card (magnetic stripe track 2 /
/// EMV tag 5A, 5F24, 5F20): PAN, expiry, cardholder name. `Debug` masked.
#[derive(Clone)]
pub struct EmulatedCard {
    pan: CardNumber,
    expiry_yymm: String,
    cardholder_name: String,
}

impl EmulatedCard {
    /// A card record; the expiry is `YYMM`.
    pub fn new(
        pan: CardNumber,
        expiry_yymm: &str,
        cardholder_name: &str,
    ) -> Result<Self, FlowError> {
        validate_yymm(expiry_yymm)?;
        // Same rules as the card data the reader will send.
        CardData::new(
            pan.clone(),
            expiry_yymm,
            cardholder_name,
            SecretKey::new([0; 16]),
        )?;
        Ok(Self {
            pan,
            expiry_yymm: expiry_yymm.to_owned(),
            cardholder_name: cardholder_name.to_owned(),
        })
    }
}

impl fmt::Debug for EmulatedCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmulatedCard({})", self.pan.masked())
    }
}

/// What the encryption unit holds for one transaction, in memory only.
struct Session {
    key: TransactionKey,
    key_digest: ArtefactDigest,
    /// The card data sent (PAN and PIN key are needed for the PIN block).
    sent: Option<(CardData, ArtefactDigest)>,
}

/// The reader emulator.
pub struct Reader {
    issuer: TrustedKeys,
    slot: Option<EmulatedCard>,
    pin_pad: Option<Zeroizing<String>>,
    display: Vec<String>,
    session: Option<Session>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("card", &self.slot)
            .field("pin_typed", &self.pin_pad.is_some())
            .field("txn", &self.session.as_ref().map(|s| s.key.txn_id))
            .finish()
    }
}

impl Reader {
    /// A reader that trusts `issuer` keys for the host's signatures.
    pub fn new(issuer: TrustedKeys) -> Self {
        Self {
            issuer,
            slot: None,
            pin_pad: None,
            display: Vec::new(),
            session: None,
        }
    }

    /// Puts a card in the card read unit.
    pub fn insert_card(&mut self, card: EmulatedCard) {
        self.slot = Some(card);
    }

    /// Takes the card out.
    pub fn remove_card(&mut self) {
        self.slot = None;
    }

    /// Keys typed on the reader's own PIN pad (injected); used by the next
    /// PIN prompt.
    pub fn type_pin(&mut self, digits: &str) {
        self.pin_pad = Some(Zeroizing::new(digits.to_owned()));
    }

    /// Everything the display has shown, oldest first.
    pub fn display(&self) -> &[String] {
        &self.display
    }

    /// True while a transaction key is held.
    pub fn has_transaction_key(&self) -> bool {
        self.session.is_some()
    }

    /// S34 (reader side): the transaction key relayed by the phone. Kept
    /// only if the issuer's signature verifies; replaces any earlier key.
    pub fn load_transaction_key(&mut self, bytes: &[u8]) -> Result<(), FlowError> {
        let (key, key_digest) = self
            .issuer
            .verify::<TransactionKey>(bytes, "transaction key")?;
        if key.key_ref != key.txn_id.transaction_key_ref() {
            return Err(FlowError::WrongTransaction);
        }
        self.session = Some(Session {
            key,
            key_digest,
            sent: None,
        });
        self.display.push("Insert or swipe your card".to_owned());
        Ok(())
    }

    /// S35–S36: reads the card, draws a fresh PIN key, and seals card data
    /// and PIN key to the transaction key. Returns the ciphertext for the
    /// phone to relay (S37).
    pub fn read_card(&mut self, rng: &mut impl CryptoRng) -> Result<Vec<u8>, FlowError> {
        let session = self.session.as_mut().ok_or(FlowError::NoTransactionKey)?;
        let card = self.slot.as_ref().ok_or(FlowError::NoCard)?;
        let mut pin_key = [0u8; 16];
        rng.fill_bytes(&mut pin_key);
        let data = CardData::new(
            card.pan.clone(),
            &card.expiry_yymm,
            &card.cardholder_name,
            SecretKey::new(pin_key),
        )?;
        zeroize::Zeroize::zeroize(&mut pin_key);
        let sealed = seal_card_data(&data, &session.key, &session.key_digest, rng)?;
        session.sent = Some((data, ArtefactDigest::of(&sealed)));
        self.display.push("Card read".to_owned());
        Ok(sealed)
    }

    /// S39–S41: a PIN prompt relayed by the phone. Verified (issuer
    /// signature, this transaction, the card data this reader sent) before
    /// it is shown; then the PIN typed on the reader's own pad is enciphered
    /// as a format-4 block for the card's PAN under the PIN key and sealed
    /// to the transaction key. The typed PIN is consumed either way once
    /// the prompt is accepted.
    pub fn handle_pin_prompt(
        &mut self,
        bytes: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, FlowError> {
        let session = self.session.as_ref().ok_or(FlowError::NoTransactionKey)?;
        let (prompt, prompt_digest) = self.issuer.verify::<PinPrompt>(bytes, "PIN prompt")?;
        if prompt.txn_id != session.key.txn_id {
            return Err(FlowError::WrongTransaction);
        }
        let (card, card_digest) = session.sent.as_ref().ok_or(FlowError::CardNotRead)?;
        if prompt.card_data != *card_digest {
            return Err(FlowError::DigestMismatch("card data"));
        }
        self.display.push(format!(
            "Enter PIN: {} to {} ({})",
            prompt.amount, prompt.merchant_name, prompt.masked_pan
        ));
        let typed = self.pin_pad.take().ok_or(FlowError::NoPinEntered)?;
        let pin = Pin::new(&typed).map_err(|_| FlowError::PinFormat)?;
        let pin_key = PinKey::Aes128(card.pin_key.clone());
        let block = encipher_pin_block(&pin, &card.pan, &pin_key, rng);
        let sealed = seal_pin_block(&block, &session.key, card_digest, &prompt_digest, rng)?;
        self.display.push("PIN sent".to_owned());
        Ok(sealed)
    }

    /// S44–S45: the completion (or decline) notice relayed by the phone.
    /// Verified, shown, and the transaction key, card data and PIN key are
    /// discarded (S45 公開鍵を破棄).
    pub fn handle_completion(&mut self, bytes: &[u8]) -> Result<Outcome, FlowError> {
        let session = self.session.as_ref().ok_or(FlowError::NoTransactionKey)?;
        let (done, _) = self.issuer.verify::<PhoneCompletion>(bytes, "completion")?;
        if done.txn_id != session.key.txn_id {
            return Err(FlowError::WrongTransaction);
        }
        self.display.push(match &done.outcome {
            Outcome::Settled { .. } => format!("Paid {} to {}", done.amount, done.merchant_name),
            Outcome::Declined { .. } => "Payment declined".to_owned(),
        });
        self.session = None;
        self.pin_pad = None;
        Ok(done.outcome)
    }
}
