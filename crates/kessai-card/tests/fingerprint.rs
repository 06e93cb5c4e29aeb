//! On-card fingerprint comparison (flow D claim 16): VERIFY (biometric)
//! runs the matcher inside the card against the template enrolled at
//! personalization, counts tries like the PIN, and a match turns the
//! GENERATE CRYPTOGRAM CVM byte into `02`.

mod common;

use chacha20::ChaCha8Rng;
use common::{MAX, jpy, keys, select_apdu, sw};
use kessai_biometric::Matcher;
use kessai_biometric::synth::{ImpressionParams, SyntheticFinger};
use kessai_card::{
    Card, MemNvm, PersonalizationParams, application_cryptogram, biometric_verify_data,
};
use rand_core::SeedableRng;

struct Fingers {
    owner: SyntheticFinger,
    stranger: SyntheticFinger,
    rng: ChaCha8Rng,
}

impl Fingers {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let owner = SyntheticFinger::generate(&mut rng);
        let stranger = SyntheticFinger::generate(&mut rng);
        Self {
            owner,
            stranger,
            rng,
        }
    }
    fn touch(&mut self, owner: bool) -> Vec<u8> {
        let f = if owner { &self.owner } else { &self.stranger };
        f.impression(&ImpressionParams::default(), &mut self.rng)
            .to_iso19794_2()
    }
}

fn card(fingers: &mut Fingers, tries: u8) -> Card<MemNvm> {
    let reference = fingers
        .owner
        .enrol(&Matcher::default(), &mut fingers.rng)
        .unwrap();
    let mut p =
        PersonalizationParams::new("card-0001".parse().unwrap(), keys(), jpy(), MAX, [7; 32]);
    p.fingerprint = Some(reference);
    p.bio_max_tries = tries;
    let mut card = Card::personalize(p, MemNvm::new()).unwrap();
    card.power_on();
    card
}

/// Extended-length VERIFY (biometric) APDU for a 19794-2 record.
fn verify_bio(record: &[u8]) -> Vec<u8> {
    let data = biometric_verify_data(record);
    let mut a = vec![0x00, 0x21, 0x00, 0x81, 0x00];
    a.extend_from_slice(&(data.len() as u16).to_be_bytes());
    a.extend_from_slice(&data);
    a
}

fn cryptogram(card: &mut Card<MemNvm>) -> Vec<u8> {
    let mut a = vec![0x80, 0xAE, 0x00, 0x00, 18];
    a.extend_from_slice(&[9; 8]);
    a.extend_from_slice(&5_000u64.to_be_bytes());
    a.extend_from_slice(&392u16.to_be_bytes());
    a.push(0x00);
    card.transmit(&a)
}

#[test]
fn matching_finger_sets_cvm_02_in_the_cryptogram() {
    let mut f = Fingers::new();
    let mut card = card(&mut f, 5);
    card.transmit(&select_apdu());
    // Status before any attempt: 5 tries left.
    assert_eq!(card.transmit(&[0x00, 0x21, 0x00, 0x81]), [0x63, 0xC5]);
    // Without a match the cryptogram says "no CVM".
    let r = cryptogram(&mut card);
    assert_eq!(sw(&r), 0x9000);
    assert_eq!(r[4], 0x00);

    let probe = f.touch(true);
    assert!(probe.len() > 255, "a real record needs extended length");
    assert_eq!(card.transmit(&verify_bio(&probe)), [0x90, 0x00]);
    assert_eq!(card.transmit(&[0x00, 0x21, 0x00, 0x81]), [0x90, 0x00]);
    let r = cryptogram(&mut card);
    assert_eq!(sw(&r), 0x9000);
    let counter = u32::from_be_bytes(r[0..4].try_into().unwrap());
    assert_eq!((counter, r[4]), (2, 0x02));
    let expected = application_cryptogram(
        &keys().cryptogram_key,
        &[9; 8],
        5_000,
        392,
        counter,
        2,
        "card-0001",
    );
    assert_eq!(&r[5..21], &expected);

    // SELECT ends the verified status.
    card.transmit(&select_apdu());
    assert_eq!(cryptogram(&mut card)[4], 0x00);
}

#[test]
fn stranger_counts_tries_blocks_and_survives_power_cycles() {
    let mut f = Fingers::new();
    let mut card = card(&mut f, 3);
    card.transmit(&select_apdu());
    let stranger = f.touch(false);
    assert_eq!(card.transmit(&verify_bio(&stranger)), [0x63, 0xC2]);
    assert_eq!(cryptogram(&mut card)[4], 0x00, "no CVM after a mismatch");
    // A match resets the counter.
    let owner = f.touch(true);
    assert_eq!(card.transmit(&verify_bio(&owner)), [0x90, 0x00]);
    assert_eq!(card.snapshot().fingerprint_tries_left, Some(3));
    // A mismatch clears an earlier match.
    assert_eq!(card.transmit(&verify_bio(&stranger)), [0x63, 0xC2]);
    assert_eq!(cryptogram(&mut card)[4], 0x00);
    assert_eq!(card.transmit(&verify_bio(&stranger)), [0x63, 0xC1]);
    card.power_on();
    card.transmit(&select_apdu());
    assert_eq!(card.snapshot().fingerprint_tries_left, Some(1));
    assert_eq!(card.transmit(&verify_bio(&stranger)), [0x63, 0xC0]);
    // Blocked: even the right finger is refused.
    let owner = f.touch(true);
    assert_eq!(card.transmit(&verify_bio(&owner)), [0x69, 0x83]);
    assert_eq!(card.transmit(&[0x00, 0x21, 0x00, 0x81]), [0x69, 0x83]);
    assert_eq!(cryptogram(&mut card)[4], 0x00);
}

#[test]
fn malformed_biometric_data_is_refused_without_using_a_try() {
    let mut f = Fingers::new();
    let mut card = card(&mut f, 3);
    card.transmit(&select_apdu());
    let probe = f.touch(true);
    let good = verify_bio(&probe);
    // Not a 19794-2 record inside a well-formed template.
    let mut garbage = probe.clone();
    garbage[0] ^= 0xFF;
    assert_eq!(card.transmit(&verify_bio(&garbage)), [0x6A, 0x80]);
    // Template with trailing bytes, wrong tags, truncated length.
    let mut trailing = biometric_verify_data(&probe);
    trailing.push(0x00);
    let mut a = vec![0x00, 0x21, 0x00, 0x81, 0x00];
    a.extend_from_slice(&(trailing.len() as u16).to_be_bytes());
    a.extend_from_slice(&trailing);
    assert_eq!(card.transmit(&a), [0x6A, 0x80]);
    let mut wrong_tag = good.clone();
    wrong_tag[7] = 0x7E;
    assert_eq!(card.transmit(&wrong_tag), [0x6A, 0x80]);
    // Wrong P2 and wrong CLA.
    let mut p2 = good.clone();
    p2[3] = 0x80;
    assert_eq!(sw(&card.transmit(&p2)), 0x6A86);
    assert_eq!(sw(&card.transmit(&[0x80, 0x21, 0x00, 0x81])), 0x6E00);
    // Extended length is allowed for this command only in the ISO class.
    let mut cla = good.clone();
    cla[0] = 0x80;
    assert_eq!(sw(&card.transmit(&cla)), 0x6700);
    assert_eq!(card.snapshot().fingerprint_tries_left, Some(3));
    // Still works afterwards.
    assert_eq!(card.transmit(&good), [0x90, 0x00]);
}

#[test]
fn card_without_a_fingerprint_answers_6a88() {
    let mut card = common::card_with(0);
    card.transmit(&select_apdu());
    let mut f = Fingers::new();
    assert_eq!(card.transmit(&verify_bio(&f.touch(true))), [0x6A, 0x88]);
    assert_eq!(card.snapshot().fingerprint_tries_left, None);
}

#[test]
fn torn_fingerprint_attempt_never_resets_the_try_counter() {
    let mut f = Fingers::new();
    let mut base = card(&mut f, 3);
    base.transmit(&select_apdu());
    let stranger = f.touch(false);
    assert_eq!(base.transmit(&verify_bio(&stranger)), [0x63, 0xC2]);
    let nvm = base.into_nvm();
    let owner = verify_bio(&f.touch(true));
    // A matching attempt writes twice: the decrement, then the reset.
    let mut probe = Card::load(nvm.clone()).unwrap();
    probe.transmit(&select_apdu());
    let before = probe.nvm().write_count();
    assert_eq!(probe.transmit(&owner), [0x90, 0x00]);
    let writes = probe.nvm().write_count() - before;
    assert_eq!(writes, 2);
    for k in 0..=writes {
        let mut card = Card::load(nvm.clone()).unwrap();
        card.transmit(&select_apdu());
        card.nvm_mut().cut_power_after(k);
        card.transmit(&owner);
        card.nvm_mut().restore_power();
        card.power_on();
        let tries = card.snapshot().fingerprint_tries_left.unwrap();
        let expected = match k {
            0 => 2, // the attempt did not happen
            1 => 1, // torn after the decrement: counts as a failure
            _ => 3, // completed match resets
        };
        assert_eq!(tries, expected, "cut after write {k}");
        // After power-up nothing is verified.
        card.transmit(&select_apdu());
        assert_eq!(cryptogram(&mut card)[4], 0x00);
    }
}
