//! SCRAM-SHA-256 and SCRAM-SHA-512, the server's side (RFC 5802, RFC 7677),
//! as Kafka's SASL/SCRAM speaks it: no channel binding, a user's credential
//! kept as salt, iteration count, `StoredKey` and `ServerKey` — never the
//! password.
//!
//! An exchange is two steps. [`ServerExchange::start`] reads the client's
//! first message and answers the server's (the client's nonce, the server's
//! appended, the salt and iteration count); [`ServerFirst::finish`] reads the
//! client's final message, checks its proof and answers the server's
//! signature. An unknown user goes through the same steps with a salt made
//! from the user name and a secret of the process, and fails at the proof:
//! the first answer does not tell who exists.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use subtle::ConstantTimeEq as _;

use crate::limits::{
    SCRAM_ITERATIONS_DEFAULT, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_MESSAGE_BYTES_MAX,
    SCRAM_NONCE_BYTES, SCRAM_SALT_BYTES, SCRAM_SALT_BYTES_MAX,
};

/// A SCRAM mechanism: which hash.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Mechanism {
    /// `SCRAM-SHA-256` (RFC 7677).
    Sha256,
    /// `SCRAM-SHA-512`.
    Sha512,
}

impl Mechanism {
    /// Both, in the order a server offers them.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism a SASL name names.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: hmac::Mac + hmac::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac =
                <M as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Mechanism::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, parts),
            Mechanism::Sha512 => run::<hmac::Hmac<sha2::Sha512>>(key, parts),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Mechanism::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this HMAC, one block.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1_u32.to_be_bytes()]);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &[&u]);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

/// What the server keeps of a user's password for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The hash.
    pub mechanism: Mechanism,
    /// The salt.
    pub salt: Vec<u8>,
    /// The iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys stay out of logs: with them a client can be impersonated
        // to this server (StoredKey) or this server to a client (ServerKey).
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a credential could not be made or an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The iteration count is outside what is accepted.
    #[error("{0} iterations: SCRAM takes {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}")]
    Iterations(u32),
    /// A client's message is not what SCRAM expects at this step.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// The client asked for channel binding, which this server does not
    /// offer, or for an extension it does not know.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The proof does not match: a wrong password or an unknown user (not
    /// told apart, on purpose).
    #[error("authentication failed")]
    Failed,
}

impl Credential {
    /// The credential for `password` with a fresh random salt.
    pub fn new(
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<Credential, ScramError> {
        let mut salt = vec![0; SCRAM_SALT_BYTES];
        crate::random::fill(&mut salt);
        Credential::with_salt(mechanism, password, salt, iterations)
    }

    /// The credential for `password` with a given salt.
    pub fn with_salt(
        mechanism: Mechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<Credential, ScramError> {
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        // RFC 5802 asks for SASLprep of the password; Kafka's clients and
        // server send and hash it as it is, and so does this one.
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Credential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// The credential of a password already salted and hashed by the client
    /// (`SaltedPassword := Hi(password, salt, iterations)`, what Kafka's
    /// AlterUserScramCredentials carries), so that the password never
    /// reaches the server.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Result<Credential, ScramError> {
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let expected = mechanism.hash(b"").len();
        if salted_password.len() != expected || salt.is_empty() || salt.len() > SCRAM_SALT_BYTES_MAX
        {
            return Err(ScramError::Malformed(format!(
                "a {} salted password is {expected} bytes, with a salt of 1..={SCRAM_SALT_BYTES_MAX} bytes",
                mechanism.name()
            )));
        }
        let client_key = mechanism.hmac(salted_password, &[b"Client Key"]);
        Ok(Credential {
            mechanism,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
            salt,
            iterations,
        })
    }

    /// Whether `password` is the one this credential was made from (SASL
    /// PLAIN checks a password against the same credential).
    pub fn verifies(&self, password: &str) -> bool {
        let salted =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = self.mechanism.hmac(&salted, &[b"Client Key"]);
        bool::from(self.mechanism.hash(&client_key).ct_eq(&self.stored_key))
    }
}

/// The server's side of one exchange, before the client's first message.
pub struct ServerExchange {
    mechanism: Mechanism,
    /// A secret of the process, salting the made-up credentials of unknown
    /// users.
    decoy_key: [u8; 32],
}

/// The server's side after its first answer.
pub struct ServerFirst {
    user: String,
    credential: Option<Credential>,
    decoy: Credential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl std::fmt::Debug for ServerFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFirst")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A finished exchange: who authenticated and the server's last message.
#[derive(Debug)]
pub struct Authenticated {
    /// The user name the client proved.
    pub user: String,
    /// `v=<ServerSignature>`, for the client to check the server.
    pub server_final: String,
}

/// Reads `n=` user names: `=2C` is `,` and `=3D` is `=`; any other `=` is
/// malformed (RFC 5802 §5.1).
fn sasl_name(raw: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(ScramError::Malformed(format!(
                    "user name {raw:?}: a bare '='"
                )))
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("an empty user name".into()));
    }
    Ok(out)
}

fn text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > SCRAM_MESSAGE_BYTES_MAX {
        return Err(ScramError::Malformed(format!(
            "{} bytes; a message is at most {SCRAM_MESSAGE_BYTES_MAX}",
            message.len()
        )));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8".into()))
}

/// A printable nonce: 1..=126 ASCII characters other than `,`.
fn printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ServerExchange {
    /// An exchange for `mechanism`; `decoy_key` is a secret of the process
    /// (the same for every exchange, so an unknown user always gets the same
    /// made-up salt, as a known one gets its real one).
    pub fn new(mechanism: Mechanism, decoy_key: [u8; 32]) -> ServerExchange {
        ServerExchange {
            mechanism,
            decoy_key,
        }
    }

    /// Reads the client's first message; `lookup` finds the user's
    /// credential for this mechanism. Answers the server's first message.
    pub fn start(
        self,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<(ServerFirst, String), ScramError> {
        let message = text(client_first)?;
        // gs2-header: a channel-binding flag, an optional authzid, then the
        // bare message.
        let (flag, rest) = message
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("no GS2 header".into()))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(ScramError::Unsupported(
                    "channel binding (this server offers none)".into(),
                ))
            }
            f => return Err(ScramError::Malformed(format!("channel-binding flag {f:?}"))),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("no authorization identity field".into()))?;
        let mut attributes = bare.split(',');
        let user = match attributes.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(ScramError::Unsupported("a mandatory extension".into()))
            }
            Some(a) => sasl_name(
                a.strip_prefix("n=")
                    .ok_or_else(|| ScramError::Malformed("no user name (n=)".into()))?,
            )?,
            None => return Err(ScramError::Malformed("an empty message".into())),
        };
        if let Some(a) = authzid.strip_prefix("a=") {
            // Acting as another user is not offered.
            if sasl_name(a)? != user {
                return Err(ScramError::Unsupported(
                    "an authorization identity other than the user".into(),
                ));
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed(format!(
                "authorization field {authzid:?}"
            )));
        }
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| printable(n))
            .ok_or_else(|| ScramError::Malformed("no printable client nonce (r=)".into()))?;
        // Further attributes are extensions (Kafka's `tokenauth=true`):
        // this server has no delegation tokens, so a token login fails at
        // the proof like any unknown user.
        let mut ours = [0_u8; SCRAM_NONCE_BYTES];
        crate::random::fill(&mut ours);
        let nonce = format!("{client_nonce}{}", BASE64.encode(ours));
        let decoy = {
            let salt = self.mechanism.hmac(&self.decoy_key, &[user.as_bytes()]);
            Credential {
                mechanism: self.mechanism,
                salt: salt[..SCRAM_SALT_BYTES].to_vec(),
                // What new users get, so the count does not single out
                // the unknown.
                iterations: SCRAM_ITERATIONS_DEFAULT,
                stored_key: Vec::new(),
                server_key: Vec::new(),
            }
        };
        let credential = lookup(&user).filter(|c| c.mechanism == self.mechanism);
        let shown = credential.as_ref().unwrap_or(&decoy);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&shown.salt),
            shown.iterations
        );
        Ok((
            ServerFirst {
                user,
                credential,
                decoy,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
                gs2_header: format!("{flag},{authzid},"),
            },
            server_first,
        ))
    }
}

impl ServerFirst {
    /// The user the client named.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Reads the client's final message and checks its proof.
    pub fn finish(self, client_final: &[u8]) -> Result<Authenticated, ScramError> {
        let message = text(client_final)?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError::Malformed("no proof (p=)".into()))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| ScramError::Malformed("no channel binding (c=)".into()))?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "the channel binding does not repeat the GS2 header".into(),
            ));
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| ScramError::Malformed("no nonce (r=)".into()))?;
        // Ends with, as Kafka checks: librdkafka (2.0 at least) repeats its
        // own nonce before the whole of the server's. What makes the proof
        // fresh is the server's part, which must be there, at the end.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError::Malformed(
                "the nonce is not the exchange's".into(),
            ));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("the proof is not base64".into()))?;
        // An unknown user is checked against the decoy, which nothing
        // matches, so both fail the same way after the same work.
        let credential = self.credential.as_ref().unwrap_or(&self.decoy);
        let mechanism = credential.mechanism;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = mechanism.hmac(&credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != signature.len() {
            return Err(ScramError::Failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let matches = mechanism.hash(&client_key).ct_eq(&credential.stored_key);
        if self.credential.is_none() || !bool::from(matches) {
            return Err(ScramError::Failed);
        }
        let server_signature = mechanism.hmac(&credential.server_key, &[auth_message.as_bytes()]);
        Ok(Authenticated {
            user: self.user,
            server_final: format!("v={}", BASE64.encode(server_signature)),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds the server's side with a fixed nonce, for test vectors.
    pub(crate) fn with_nonce(first: &mut ServerFirst, server_nonce: &str, client_nonce: &str) {
        first.nonce = format!("{client_nonce}{server_nonce}");
        let shown = first.credential.as_ref().unwrap_or(&first.decoy);
        first.server_first = format!(
            "r={},s={},i={}",
            first.nonce,
            BASE64.encode(&shown.salt),
            shown.iterations
        );
    }

    fn lookup_of(c: &Credential) -> impl FnOnce(&str) -> Option<Credential> + '_ {
        move |user| (user == "user").then(|| c.clone())
    }

    /// A transcript run through the server with its nonce fixed: what it
    /// answers at each step.
    fn replay(
        credential: &Credential,
        client_first: &str,
        client_nonce: &str,
        server_nonce: &str,
        client_final: &str,
    ) -> (String, Result<Authenticated, ScramError>) {
        let exchange = ServerExchange::new(credential.mechanism, [7; 32]);
        let (mut first, _) = exchange
            .start(client_first.as_bytes(), lookup_of(credential))
            .unwrap();
        with_nonce(&mut first, server_nonce, client_nonce);
        let server_first = first.server_first.clone();
        (server_first, first.finish(client_final.as_bytes()))
    }

    /// RFC 7677 §3's exchange, byte for byte.
    #[test]
    fn rfc_7677_test_vector() {
        let c = Credential::with_salt(
            Mechanism::Sha256,
            "pencil",
            BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        )
        .unwrap();
        let (server_first, done) = replay(
            &c,
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let done = done.unwrap();
        assert_eq!(done.user, "user");
        assert_eq!(
            done.server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// SCRAM-SHA-512 has no RFC vector: this exchange was made by another
    /// implementation (the `scramp` 1.4.5 package from PyPI, its client and
    /// server, salt 00..0f, 4096 iterations) and is replayed here.
    #[test]
    fn a_sha_512_exchange_made_by_scramp() {
        let c =
            Credential::with_salt(Mechanism::Sha512, "pencil", (0..16).collect(), 4096).unwrap();
        let (server_first, done) = replay(
            &c,
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,\
             p=sczPDWz55v7uD/UgbCbYve2NGcPfTta81NlZ2D8RHfUomEA4mWDhKNLAeMj0b+VY4jiijtTirlPA4lL2+uBCYw==",
        );
        assert_eq!(
            server_first,
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=AAECAwQFBgcICQoLDA0ODw==,i=4096"
        );
        assert_eq!(
            done.unwrap().server_final,
            "v=IjZlPJPD3YUHkwZ7B1RIGQ+oWq0m+rajQGj7xs6bOhKfd/gSAFz4EY1bBliuPZh2pvrC92S5ZLQoWGjdDj8m6g=="
        );
    }

    /// A client's side, for the exchanges below: its final message for
    /// `password` after the server's first.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        bare: &str,
        server_first: &str,
    ) -> String {
        client_final_repeating(mechanism, password, bare, server_first, "")
    }

    /// [`client_final`] with `repeated` before the nonce, as librdkafka
    /// sends it.
    fn client_final_repeating(
        mechanism: Mechanism,
        password: &str,
        bare: &str,
        server_first: &str,
        repeated: &str,
    ) -> String {
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for a in server_first.split(',') {
            match a.split_at(2) {
                ("r=", n) => nonce = n,
                ("s=", s) => salt = Some(BASE64.decode(s).unwrap()),
                ("i=", i) => iterations = i.parse().unwrap(),
                _ => {}
            }
        }
        let salted = mechanism.salted_password(password.as_bytes(), &salt.unwrap(), iterations);
        let client_key = mechanism.hmac(&salted, &[b"Client Key"]);
        let stored = mechanism.hash(&client_key);
        let without = format!("c=biws,r={repeated}{nonce}");
        let auth = format!("{bare},{server_first},{without}");
        let signature = mechanism.hmac(&stored, &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without},p={}", BASE64.encode(proof))
    }

    fn exchange(
        credential: &Credential,
        user: &str,
        password: &str,
    ) -> Result<Authenticated, ScramError> {
        let bare = format!("n={user},r=clientnonce");
        let (first, server_first) = ServerExchange::new(credential.mechanism, [7; 32])
            .start(format!("n,,{bare}").as_bytes(), lookup_of(credential))?;
        first.finish(client_final(credential.mechanism, password, &bare, &server_first).as_bytes())
    }

    #[test]
    fn librdkafkas_final_nonce_passes_and_one_without_the_servers_part_fails() {
        let c = Credential::new(Mechanism::Sha256, "pw", 4096).unwrap();
        let bare = "n=user,r=clientnonce";
        for (repeated, passes) in [("clientnonce", true), ("anything", true)] {
            let (first, server_first) = ServerExchange::new(c.mechanism, [7; 32])
                .start(format!("n,,{bare}").as_bytes(), lookup_of(&c))
                .unwrap();
            let last = client_final_repeating(c.mechanism, "pw", bare, &server_first, repeated);
            assert_eq!(first.finish(last.as_bytes()).is_ok(), passes, "{repeated}");
        }
        // The server's part cut short: refused.
        let (first, server_first) = ServerExchange::new(c.mechanism, [7; 32])
            .start(format!("n,,{bare}").as_bytes(), lookup_of(&c))
            .unwrap();
        let cut = server_first.replacen(",s=", "x,s=", 1);
        let last = client_final(c.mechanism, "pw", bare, &cut);
        assert!(matches!(
            first.finish(last.as_bytes()),
            Err(ScramError::Malformed(m)) if m.contains("nonce")
        ));
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_or_an_unknown_user_fails_alike() {
        for mechanism in Mechanism::ALL {
            let c = Credential::new(mechanism, "s3cret", 4096).unwrap();
            assert_eq!(exchange(&c, "user", "s3cret").unwrap().user, "user");
            assert_eq!(
                exchange(&c, "user", "guess").unwrap_err(),
                ScramError::Failed
            );
            assert_eq!(
                exchange(&c, "mallory", "s3cret").unwrap_err(),
                ScramError::Failed
            );
        }
    }

    #[test]
    fn an_unknown_user_is_answered_like_a_known_one() {
        // A user made with the default count, as `tidings users add` makes them.
        let c = Credential::new(Mechanism::Sha256, "s3cret", SCRAM_ITERATIONS_DEFAULT).unwrap();
        let first = |user: &str| {
            ServerExchange::new(Mechanism::Sha256, [7; 32])
                .start(format!("n,,n={user},r=abc").as_bytes(), lookup_of(&c))
                .unwrap()
                .1
        };
        let salt = |answer: String| answer.split(',').nth(1).unwrap().to_owned();
        // The same made-up salt each time, as a real user's does not change.
        assert_eq!(salt(first("mallory")), salt(first("mallory")));
        assert_ne!(salt(first("mallory")), salt(first("eve")));
        let iterations = |answer: String| answer.split(',').nth(2).unwrap().to_owned();
        assert_eq!(iterations(first("mallory")), iterations(first("user")));
    }

    #[test]
    fn bad_messages_are_named() {
        let c = Credential::new(Mechanism::Sha256, "s3cret", 4096).unwrap();
        let start = |m: &str| {
            ServerExchange::new(Mechanism::Sha256, [7; 32]).start(m.as_bytes(), lookup_of(&c))
        };
        for (message, said) in [
            ("p=tls-unique,,n=user,r=abc", "channel binding"),
            ("n,,r=abc", "no user name"),
            ("n,,n=user", "client nonce"),
            ("n,,n=us=er,r=abc", "bare '='"),
            ("n,a=admin,n=user,r=abc", "authorization identity"),
            ("n,,m=ext,n=user,r=abc", "mandatory extension"),
            ("x,,n=user,r=abc", "channel-binding flag"),
            ("n,,n=user,r=a,b", ""),
        ] {
            match start(message) {
                Err(e) => assert!(e.to_string().contains(said), "{message}: {e}"),
                Ok(_) if said.is_empty() => {}
                Ok(_) => panic!("{message}: accepted"),
            }
        }
        let long = format!("n,,n=user,r={}", "a".repeat(SCRAM_MESSAGE_BYTES_MAX));
        assert!(matches!(start(&long), Err(ScramError::Malformed(m)) if m.contains("at most")));

        let (first, _) = start("n,,n=user,r=abc").unwrap();
        let nonce = first.nonce.clone();
        for (message, said) in [
            (format!("c=biws,r={nonce}"), "no proof"),
            (format!("c=eSws,r={nonce},p=AAAA"), "GS2 header"),
            ("c=biws,r=abc,p=AAAA".to_owned(), "not the exchange's"),
            (format!("c=biws,r={nonce},p=!!"), "not base64"),
        ] {
            let (again, _) = start("n,,n=user,r=abc").unwrap();
            let mut again = again;
            again.nonce = nonce.clone();
            let e = again.finish(message.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(said), "{message}: {e}");
        }
    }

    #[test]
    fn iterations_are_bounded_and_keys_stay_out_of_debug() {
        assert_eq!(
            Credential::new(Mechanism::Sha256, "p", 4095).unwrap_err(),
            ScramError::Iterations(4095)
        );
        assert!(Credential::new(Mechanism::Sha512, "p", 16_385).is_err());
        let c = Credential::with_salt(Mechanism::Sha256, "p", vec![1; 16], 4096).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("stored_key") && !shown.contains("server_key"),
            "{shown}"
        );
        assert!(c.verifies("p") && !c.verifies("q"));
    }

    #[test]
    fn user_names_unescape_and_a_bare_equals_is_refused() {
        assert_eq!(sasl_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(sasl_name("a=b").is_err());
        assert!(sasl_name("").is_err());
    }
}
