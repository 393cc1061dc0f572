//! What a snapshot signature covers, and checking one.
//!
//! Lives here rather than in the publisher (ingest) because followers (resolver) must check
//! the publisher's signature without depending on the publisher's code: the signed message
//! is a format both sides share, like the listing itself.
//!
//! A snapshot is signed (ed25519) over (sequence, root CID, previous root CID): the root
//! covers every byte of the listing, the manifest included, and the chain of previous roots
//! makes a rollback visible. The message is text, so anyone can check it with any ed25519
//! tool:
//!
//! ```text
//! cidmirror-snapshot-v1
//! seq 42
//! root bafy...
//! previous bafy...        ("previous -" for the first snapshot)
//! ```
//! (lines joined with `\n`, a final `\n`).

use cid::Cid;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::{Error, Result};

/// The message a snapshot signature covers; the signer and every verifier must build the
/// same bytes, so both use this one function.
pub fn snapshot_message(seq: u64, root: &Cid, previous: Option<&Cid>) -> Vec<u8> {
    let prev = previous.map_or_else(|| "-".to_string(), Cid::to_string);
    format!("cidmirror-snapshot-v1\nseq {seq}\nroot {root}\nprevious {prev}\n").into_bytes()
}

/// Parses a publisher public key given as 64 hex digits (surrounding whitespace ignored),
/// as it appears in configuration: a follower parses it once at start-up, so a bad key is
/// reported (naming it) before any snapshot arrives.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey> {
    let invalid = |reason: String| Error::InvalidKey(format!("publisher key {hex:?}: {reason}"));
    let mut pk = [0u8; 32];
    hex::decode_to_slice(hex.trim(), &mut pk)
        .map_err(|e| invalid(format!("{e} (expected 64 hex digits)")))?;
    VerifyingKey::from_bytes(&pk).map_err(|e| invalid(e.to_string()))
}

/// Whether `signature` is the publisher's signature of snapshot (`seq`, `root`,
/// `previous`) under an already parsed `key`. A signature of the wrong length is simply not
/// valid (false): whoever delivered it is not trusted, so it is not an error of ours.
pub fn verify_snapshot_with(
    key: &VerifyingKey,
    seq: u64,
    root: &Cid,
    previous: Option<&Cid>,
    signature: &[u8],
) -> bool {
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify(&snapshot_message(seq, root, previous), &sig)
        .is_ok()
}

/// [`verify_snapshot_with`] for a key given as 64 hex digits; an unusable key is an error
/// ([`Error::InvalidKey`]), a signature that does not verify is `Ok(false)`.
pub fn verify_snapshot(
    public_hex: &str,
    seq: u64,
    root: &Cid,
    previous: Option<&Cid>,
    signature: &[u8],
) -> Result<bool> {
    let key = parse_public_key(public_hex)?;
    Ok(verify_snapshot_with(&key, seq, root, previous, signature))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn public_hex(k: &SigningKey) -> String {
        hex::encode(k.verifying_key().to_bytes())
    }

    #[test]
    fn the_message_is_the_documented_text() {
        let root: Cid = "bafkqaaa".parse().unwrap();
        assert_eq!(
            snapshot_message(42, &root, None),
            b"cidmirror-snapshot-v1\nseq 42\nroot bafkqaaa\nprevious -\n"
        );
        assert_eq!(
            snapshot_message(43, &root, Some(&root)),
            b"cidmirror-snapshot-v1\nseq 43\nroot bafkqaaa\nprevious bafkqaaa\n"
        );
    }

    #[test]
    fn signatures_verify_only_for_what_was_signed() {
        let k = key(7);
        let root: Cid = "bafkqaaa".parse().unwrap();
        let sig = k.sign(&snapshot_message(3, &root, None)).to_bytes();
        let hex = public_hex(&k);
        assert!(verify_snapshot(&hex, 3, &root, None, &sig).unwrap());
        assert!(verify_snapshot(&format!(" {hex}\n"), 3, &root, None, &sig).unwrap());
        assert!(!verify_snapshot(&hex, 4, &root, None, &sig).unwrap());
        assert!(!verify_snapshot(&hex, 3, &root, Some(&root), &sig).unwrap());
        assert!(!verify_snapshot(&public_hex(&key(8)), 3, &root, None, &sig).unwrap());
        assert!(!verify_snapshot(&hex, 3, &root, None, &sig[..63]).unwrap());

        let vk = parse_public_key(&hex).unwrap();
        assert!(verify_snapshot_with(&vk, 3, &root, None, &sig));
        assert!(!verify_snapshot_with(&vk, 3, &root, None, b""));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!verify_snapshot_with(&vk, 3, &root, None, &bad));
    }

    #[test]
    fn a_bad_public_key_is_an_error_naming_it() {
        for bad in [
            "",
            "zz",
            &"ab".repeat(31),
            &"ab".repeat(33),
            &"g".repeat(64),
        ] {
            let err = parse_public_key(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey(_)), "{bad:?}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            let root: Cid = "bafkqaaa".parse().unwrap();
            assert!(verify_snapshot(bad, 1, &root, None, &[0; 64]).is_err());
        }
    }
}
