//! Password and token hashes: argon2id in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), as `sandport passwd` prints
//! them. Verification compares in constant time (the `password-hash` crate
//! does), and takes the cost parameters from the stored string.

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

/// Hash `secret` with argon2id and a fresh random salt.
pub fn hash(secret: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(secret, &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Check that `phc` is an argon2id PHC string.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!("must be argon2id (from `sandport passwd`), not {}", parsed.algorithm));
    }
    if parsed.hash.is_none() {
        return Err("has no hash value".into());
    }
    Ok(())
}

/// Does `secret` match the (already checked) PHC string?
pub fn verify(secret: &[u8], phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(secret, &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let one = hash(b"s3cret").unwrap();
        let two = hash(b"s3cret").unwrap();
        assert!(one.starts_with("$argon2id$"), "{one}");
        assert_ne!(one, two, "a fresh salt each time");
        check_phc(&one).unwrap();
        assert!(verify(b"s3cret", &one));
        assert!(!verify(b"s3cret!", &one));
        assert!(!verify(b"s3cret", "not a hash"));
    }

    #[test]
    fn only_argon2id_phc_strings_are_accepted() {
        assert!(check_phc("plaintext").is_err());
        assert!(check_phc("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$8Kj3l6hV7yJqG9e5pTwJbg").is_err());
    }
}
