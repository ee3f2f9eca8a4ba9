//! The bounds of authentication and permissions, in one place. Units are in
//! the names; what relates them is asserted at compile time.

/// The fewest PBKDF2 iterations a SCRAM credential may use (RFC 7677's
/// minimum, and Kafka's).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
/// The most (Kafka's limit): a login costs the server this many HMACs.
pub const SCRAM_ITERATIONS_MAX: u32 = 16_384;
/// What new credentials use.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = 8192;
/// Random bytes of a new credential's salt.
pub const SCRAM_SALT_BYTES: usize = 16;
/// The longest salt a credential made elsewhere (Kafka's
/// AlterUserScramCredentials) may bring: Kafka's clients send 20 to 32.
pub const SCRAM_SALT_BYTES_MAX: usize = 64;
/// Random bytes the server adds to the client's nonce.
pub const SCRAM_NONCE_BYTES: usize = 18;
/// The longest SCRAM or PLAIN message read: names, nonces and a proof fit
/// many times over; anything longer is refused before it is parsed.
pub const SCRAM_MESSAGE_BYTES_MAX: usize = 4096;
/// The longest user name.
pub const USER_NAME_BYTES_MAX: usize = 255;
/// The longest password accepted (it is hashed at every PLAIN login).
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Passwords a server remembers as lately verified (HTTP basic logins),
/// each a 32-byte fingerprint and a user name.
pub const PASSWORDS_REMEMBERED_MAX: usize = 4096;
/// Users one server holds.
pub const USERS_MAX: usize = 10_000;
/// The largest the stored users and permissions may be: every user's two
/// credentials and every permission, as JSON, fit.
pub const AUTH_STATE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Permissions one server holds.
pub const ACLS_MAX: usize = 20_000;
/// The longest resource name or prefix in a permission (a topic name is at
/// most 249 bytes; a stream name may be longer).
pub const RESOURCE_NAME_BYTES_MAX: usize = 1024;

/// Random bytes of an API token's id (listed, and shown in hex).
pub const TOKEN_ID_BYTES: usize = 8;
/// Random bytes of an API token's secret: 256 bits, beyond guessing.
pub const TOKEN_SECRET_BYTES: usize = 32;
/// The longest text taken as a token; longer is refused before it is hashed.
pub const TOKEN_BYTES_MAX: usize = 128;
/// The longest name of a token.
pub const TOKEN_NAME_BYTES_MAX: usize = 255;
/// Tokens one server holds.
pub const TOKENS_MAX: usize = 10_000;

const _: () = assert!(SCRAM_ITERATIONS_MIN <= SCRAM_ITERATIONS_DEFAULT);
const _: () = assert!(SCRAM_ITERATIONS_DEFAULT <= SCRAM_ITERATIONS_MAX);
// A salt shorter than a hash's output is still unique per user; the decoy
// salt of an unknown user is cut from an HMAC of at least 32 bytes.
const _: () = assert!(SCRAM_SALT_BYTES <= 32);
const _: () = assert!(SCRAM_SALT_BYTES <= SCRAM_SALT_BYTES_MAX);
// A PLAIN message carries the user and the password with two separators.
const _: () = assert!(USER_NAME_BYTES_MAX * 2 + PASSWORD_BYTES_MAX + 2 <= SCRAM_MESSAGE_BYTES_MAX);
// A token's text: `tdg_`, the id in hex, `_`, the secret in base64url.
const _: () =
    assert!(4 + TOKEN_ID_BYTES * 2 + 1 + TOKEN_SECRET_BYTES.div_ceil(3) * 4 <= TOKEN_BYTES_MAX);
// A credential is under 512 bytes of JSON: its salt and two keys (of at
// most 64 bytes, SHA-512's) in base64, with the field names and numbers.
const _: () =
    assert!(SCRAM_SALT_BYTES_MAX.div_ceil(3) * 4 + 2 * 64_usize.div_ceil(3) * 4 + 160 <= 512);
// A user's two credentials and name, a token under 512 beside its names, a
// permission under 2 KiB with its longest name.
const _: () = assert!(
    USERS_MAX * (2 * 512 + USER_NAME_BYTES_MAX + 64)
        + TOKENS_MAX * (512 + USER_NAME_BYTES_MAX + TOKEN_NAME_BYTES_MAX)
        + ACLS_MAX * (RESOURCE_NAME_BYTES_MAX + 512)
        <= AUTH_STATE_BYTES_MAX
);
