//! The principal of a client certificate: `User:<common name>`, the last
//! common name of its subject, wherever it stands among the subject's
//! names — so a permission for `User:alice` fits a certificate for
//! `O=Shop, CN=alice` and a SCRAM login as `alice` alike. Kafka's default
//! names such a client by its whole distinguished name; its mapping rule
//! `RULE:^CN=(.*?),.*$/$1/` comes closest to this one, but takes the CN
//! only when another name follows it.
//!
//! The certificate was verified by the TLS handshake before it gets here;
//! this reads the subject out of its DER with a reader of just the parts it
//! needs — `Certificate → TBSCertificate → subject → RDNs → CN` — that
//! checks every length against what remains and never allocates by one.

use crate::gate::Principal;
use crate::limits::USER_NAME_BYTES_MAX;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` of a v2/v3 certificate.
const VERSION: u8 = 0xA0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
const UTF8_STRING: u8 = 0x0C;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;

/// Why a certificate names no principal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The DER does not read as a certificate.
    #[error("the client certificate does not read as X.509 DER: {0}")]
    Malformed(&'static str),
    /// The subject has no common name.
    #[error("the client certificate's subject has no common name (CN) to name its user")]
    NoCommonName,
    /// The common name cannot be a user name.
    #[error("the client certificate's common name is not a user name (UTF-8, 1..={USER_NAME_BYTES_MAX} bytes, no control characters)")]
    BadCommonName,
}

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertificateError> {
    let malformed = CertificateError::Malformed;
    let (&tag, rest) = input.split_first().ok_or(malformed("cut short"))?;
    let (&first, rest) = rest.split_first().ok_or(malformed("cut short"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed("a length that is not definite DER"));
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if len > rest.len() {
        return Err(malformed("an element longer than the certificate"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The element of `tag` at the front of `input`, and what follows it.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CertificateError> {
    let (found, contents, rest) = element(input)?;
    if found != tag {
        return Err(CertificateError::Malformed(what));
    }
    Ok((contents, rest))
}

/// The common name of the certificate's subject (the last, if several).
pub fn common_name(der: &[u8]) -> Result<String, CertificateError> {
    let (certificate, _) = expect(der, SEQUENCE, "no Certificate sequence")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "no TBSCertificate sequence")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_, rest) = expect(rest, INTEGER, "no serial number")?;
    let (_, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (_, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (_, rest) = expect(rest, SEQUENCE, "no validity")?;
    let (mut names, _) = expect(rest, SEQUENCE, "no subject")?;
    let mut found = None;
    while !names.is_empty() {
        let (mut set, next) = expect(names, SET, "a subject name that is not a set")?;
        names = next;
        while !set.is_empty() {
            let (pair, next) = expect(set, SEQUENCE, "a name attribute that is not a sequence")?;
            set = next;
            let (oid, value) = expect(pair, OID, "a name attribute without its type")?;
            if oid == COMMON_NAME {
                let (tag, text, _) = element(value)?;
                if !matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
                    return Err(CertificateError::BadCommonName);
                }
                found = Some(text);
            }
        }
    }
    let text = found.ok_or(CertificateError::NoCommonName)?;
    let name = std::str::from_utf8(text).map_err(|_| CertificateError::BadCommonName)?;
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(CertificateError::BadCommonName);
    }
    Ok(name.to_owned())
}

/// The principal a verified client certificate logs in as.
pub fn principal(der: &[u8]) -> Result<Principal, CertificateError> {
    common_name(der).map(|name| Principal::user(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..0x80 => out.push(n as u8),
            n @ 0x80..0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    fn attribute(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        tlv(
            SET,
            &tlv(
                SEQUENCE,
                &[tlv(OID, oid), tlv(tag, value.as_bytes())].concat(),
            ),
        )
    }

    /// A certificate's shape with `subject` (its RDNs), as X.509 lays it out.
    fn certificate(subject: &[Vec<u8>], version: bool) -> Vec<u8> {
        let algorithm = tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48]));
        let issuer = tlv(SEQUENCE, &attribute(&COMMON_NAME, UTF8_STRING, "ca"));
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(VERSION, &tlv(INTEGER, &[2])));
        }
        tbs.extend(tlv(INTEGER, &[0x01, 0x02]));
        tbs.extend(algorithm.clone());
        tbs.extend(issuer);
        tbs.extend(tlv(SEQUENCE, &[0x17, 0x00, 0x17, 0x00]));
        tbs.extend(tlv(SEQUENCE, &subject.concat()));
        tbs.extend(tlv(SEQUENCE, &[0u8; 200])); // the key, long form length
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), algorithm, tlv(0x03, &[0; 3])].concat(),
        )
    }

    #[test]
    fn the_subjects_common_name_is_the_user() {
        let organization = [0x55, 0x04, 0x0a];
        let subject = [
            attribute(&organization, PRINTABLE_STRING, "Shop"),
            attribute(&COMMON_NAME, UTF8_STRING, "alice"),
        ];
        for version in [true, false] {
            let der = certificate(&subject, version);
            assert_eq!(principal(&der).unwrap().as_str(), "User:alice");
        }
        let printable = certificate(
            &[attribute(&COMMON_NAME, PRINTABLE_STRING, "orders-svc")],
            true,
        );
        assert_eq!(common_name(&printable).unwrap(), "orders-svc");
    }

    #[test]
    fn certificates_without_a_usable_common_name_are_refused() {
        let organization = [0x55, 0x04, 0x0a];
        let none = certificate(&[attribute(&organization, UTF8_STRING, "Shop")], true);
        assert_eq!(common_name(&none), Err(CertificateError::NoCommonName));
        let control = certificate(&[attribute(&COMMON_NAME, UTF8_STRING, "al\nice")], true);
        assert_eq!(common_name(&control), Err(CertificateError::BadCommonName));
        let bmp = certificate(&[attribute(&COMMON_NAME, 0x1E, "a")], true);
        assert_eq!(common_name(&bmp), Err(CertificateError::BadCommonName));
        let good = certificate(&[attribute(&COMMON_NAME, UTF8_STRING, "alice")], true);
        // Every cut of a good certificate is refused, never read past its end.
        for cut in 0..good.len() {
            assert!(common_name(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn any_bytes_are_answered_without_a_panic() {
        let good = certificate(&[attribute(&COMMON_NAME, UTF8_STRING, "alice")], true);
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = common_name(&bad);
            }
        }
    }
}
