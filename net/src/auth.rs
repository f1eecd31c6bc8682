//! Who is calling, and may they: tokens, passwords and permission checks on every request.
//!
//! Users, roles and permissions are replicated state (`corekv_engine::mvcc::auth`); this is
//! the member-local side, as etcd's `AuthStore` has it:
//! - tokens: `simple` (random, remembered here, expiring `--auth-token-ttl` after their last
//!   use; as in etcd 3.4 they stand for the current auth revision, so they never go stale)
//!   or `jwt` (signed, carrying the user and the auth revision they were issued at, verified
//!   with the public key: nothing remembered; older than the last auth change is stale);
//! - the caller of a request: the gRPC metadata `token` (or `authorization`, as etcd's
//!   gateway sends it); with `--client-cert-auth` and no token, the client certificate's
//!   common name;
//! - bcrypt: hashing passwords before they are proposed (the log holds hashes only), and
//!   checking them on Authenticate, off the runtime's thread (bcrypt is slow on purpose);
//! - permission checks of key-space requests against the applied auth state, with etcd's
//!   rules: a txn needs read on every compare and every op's own permission; a put or a
//!   delete asking for prev_kv also needs read; a lease revoke needs write on every key
//!   attached to the lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corekv_engine::mvcc::auth::{Access, AuthInfo, AuthShared, AuthState};
use corekv_engine::pb::{PbDeleteRequest, PbPutRequest, PbTxnOpRequest, PbTxnRequest};
use corekv_engine::KvError;

/// The gRPC metadata key etcd's clients put the token in.
pub const TOKEN_METADATA: &str = "token";
/// The other key etcd accepts (its gRPC gateway's).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_SIMPLE_TOKEN_TTL_SECS: u64 = 300;
/// etcd's default JWT `ttl`.
pub const DEFAULT_JWT_TTL_SECS: u64 = 300;
/// etcd's default `--bcrypt-cost` (Go's bcrypt.DefaultCost).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// Simple tokens remembered at once. Each Authenticate costs a bcrypt check, so reaching
/// this takes long; past it expired tokens are swept, and if none expired the request is
/// refused rather than memory grown.
pub const SIMPLE_TOKENS_MAX: usize = 1 << 20;
/// Issued simple tokens between two sweeps of the expired ones.
const SWEEP_EVERY_ISSUED: u64 = 4096;
/// Letters of the random part of a simple token (etcd's length).
const SIMPLE_TOKEN_LETTERS: usize = 16;

/// The client certificate's common name of a TLS connection, put into each of its
/// requests' extensions by the accept loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertName(pub Arc<str>);

/// The caller of a request: `None` when it named nobody.
pub type Caller = Option<AuthInfo>;

/// How tokens are made (`--auth-token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOptions {
    Simple {
        ttl: Duration,
    },
    Jwt {
        /// `sign-method`: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
        /// HS256, HS384, HS512.
        sign_method: String,
        /// PEM (or, for HS*, the secret's bytes). Without it the member only verifies.
        private_key: Option<Vec<u8>>,
        /// PEM (for HS*, ignored: the private key's secret verifies).
        public_key: Option<Vec<u8>>,
        ttl: Duration,
    },
}

impl TokenOptions {
    /// Parses etcd's `--auth-token` value: `simple`, or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=METHOD[,ttl=DURATION]`. Key files are
    /// read with `read`.
    pub fn parse(
        spec: &str,
        simple_ttl: Duration,
        read: impl Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<TokenOptions, String> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => {
                if parts.next().is_some() {
                    return Err(format!("--auth-token {spec:?}: simple takes no options"));
                }
                Ok(TokenOptions::Simple { ttl: simple_ttl })
            }
            "jwt" => {
                let (mut public_key, mut private_key, mut sign_method) = (None, None, None);
                let mut ttl = Duration::from_secs(DEFAULT_JWT_TTL_SECS);
                for part in parts {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| format!("--auth-token: option {part:?} is not key=value"))?;
                    let file = |path: &str| {
                        read(path).map_err(|e| format!("--auth-token: cannot read {path}: {e}"))
                    };
                    match k {
                        "pub-key" => public_key = Some(file(v)?),
                        "priv-key" => private_key = Some(file(v)?),
                        "sign-method" => sign_method = Some(v.to_string()),
                        "ttl" => ttl = parse_duration(v)?,
                        other => return Err(format!("--auth-token: unknown jwt option {other:?}")),
                    }
                }
                let sign_method =
                    sign_method.ok_or("--auth-token: jwt needs sign-method=METHOD")?;
                if public_key.is_none() && private_key.is_none() {
                    return Err("--auth-token: jwt needs pub-key=PATH or priv-key=PATH".into());
                }
                let options = TokenOptions::Jwt {
                    sign_method,
                    private_key,
                    public_key,
                    ttl,
                };
                // Fail at start, not at the first Authenticate.
                JwtTokens::new(&options)?;
                Ok(options)
            }
            other => Err(format!(
                "--auth-token: unknown token type {other:?} (simple or jwt)"
            )),
        }
    }
}

/// Go-style durations as etcd's jwt `ttl` takes them: `300s`, `5m`, `1h`, `1h30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("--auth-token: bad duration {text:?}");
    let mut total_ms: u64 = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    if text.is_empty() {
        return Err(bad());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit_ms: u64 = match c {
            'h' => 3_600_000,
            's' => 1000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total_ms == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(total_ms))
}

/// Everything about auth a member needs besides the replicated state.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    pub tokens: TokenOptions,
    /// `--bcrypt-cost` (4..=31).
    pub bcrypt_cost: u32,
    /// `--client-cert-auth`: a verified client certificate's CN names the caller when the
    /// request has no token.
    pub client_cert_auth: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            tokens: TokenOptions::Simple {
                ttl: Duration::from_secs(DEFAULT_SIMPLE_TOKEN_TTL_SECS),
            },
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            client_cert_auth: false,
        }
    }
}

/// The member's auth: the applied state, its tokens and the checks. One per process,
/// shared by every core.
pub struct AuthGate {
    shared: Arc<AuthShared>,
    tokens: Tokens,
    bcrypt_cost: u32,
    client_cert_auth: bool,
    /// Passwords checked with bcrypt (Authenticate of an existing password user).
    password_checks: AtomicU64,
}

impl std::fmt::Debug for AuthGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGate")
            .field("enabled", &self.shared.enabled())
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("client_cert_auth", &self.client_cert_auth)
            .finish()
    }
}

enum Tokens {
    Simple(SimpleTokens),
    Jwt(JwtTokens),
}

impl AuthGate {
    /// The gate over `shared` (the store's published auth state).
    pub fn new(shared: Arc<AuthShared>, options: &AuthOptions) -> Result<AuthGate, String> {
        if !(4..=31).contains(&options.bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {} is outside 4..=31",
                options.bcrypt_cost
            ));
        }
        let tokens = match &options.tokens {
            TokenOptions::Simple { ttl } => Tokens::Simple(SimpleTokens::new(*ttl)),
            jwt @ TokenOptions::Jwt { .. } => Tokens::Jwt(JwtTokens::new(jwt)?),
        };
        Ok(AuthGate {
            shared,
            tokens,
            bcrypt_cost: options.bcrypt_cost,
            client_cert_auth: options.client_cert_auth,
            password_checks: AtomicU64::new(0),
        })
    }

    /// A gate with auth off and default options over a fresh state (tests and tools).
    pub fn disabled() -> AuthGate {
        AuthGate::new(Arc::new(AuthShared::default()), &AuthOptions::default())
            .expect("default options are valid")
    }

    /// Whether auth is enabled now.
    pub fn enabled(&self) -> bool {
        self.shared.enabled()
    }

    /// The applied auth state.
    pub fn state(&self) -> Arc<AuthState> {
        self.shared.snapshot()
    }

    /// How many passwords went through bcrypt.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    /// etcd's `AuthInfoFromCtx`: the token's user, else (with `--client-cert-auth`) the
    /// certificate's, else nobody. A token that does not verify is an error even while auth
    /// is disabled (then no token verifies), as in etcd.
    pub fn caller(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, KvError> {
        let token = headers
            .get(TOKEN_METADATA)
            .or_else(|| headers.get(AUTHORIZATION_METADATA));
        if let Some(token) = token {
            let token = token.to_str().map_err(|_| KvError::InvalidAuthToken)?;
            return self.verify_token(token).map(Some);
        }
        if self.client_cert_auth {
            if let Some(PeerCertName(name)) = extensions.get::<PeerCertName>() {
                return Ok(Some(AuthInfo {
                    username: name.to_string(),
                    revision: self.shared.snapshot().revision,
                }));
            }
        }
        Ok(None)
    }

    /// [`Self::caller`] of a decoded tonic request.
    pub fn caller_of<T>(&self, request: &tonic::Request<T>) -> Result<Caller, KvError> {
        // MetadataMap wraps the HTTP headers; the ASCII values are the same bytes.
        let token = request
            .metadata()
            .get(TOKEN_METADATA)
            .or_else(|| request.metadata().get(AUTHORIZATION_METADATA));
        if let Some(token) = token {
            let token = token.to_str().map_err(|_| KvError::InvalidAuthToken)?;
            return self.verify_token(token).map(Some);
        }
        if self.client_cert_auth {
            if let Some(PeerCertName(name)) = request.extensions().get::<PeerCertName>() {
                return Ok(Some(AuthInfo {
                    username: name.to_string(),
                    revision: self.shared.snapshot().revision,
                }));
            }
        }
        Ok(None)
    }

    fn verify_token(&self, token: &str) -> Result<AuthInfo, KvError> {
        if !self.shared.enabled() {
            return Err(KvError::InvalidAuthToken);
        }
        match &self.tokens {
            // etcd 3.4's simple tokens answer with the current auth revision (its
            // `tokenSimple.info`): they never go stale, only expire. JWTs carry theirs.
            Tokens::Simple(t) => t.verify(token).map(|username| AuthInfo {
                username,
                revision: self.shared.snapshot().revision,
            }),
            Tokens::Jwt(t) => t.verify(token),
        }
    }

    /// etcd's Authenticate: checks the password with bcrypt (off this thread) and issues a
    /// token carrying the current auth revision.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, KvError> {
        let state = self.shared.snapshot();
        if !state.enabled {
            return Err(KvError::AuthNotEnabled);
        }
        let user = state.users.get(name).ok_or(KvError::AuthFailed)?;
        if user.no_password {
            return Err(KvError::RawAuth(
                "auth: authentication failed, password was given for no password user",
            ));
        }
        let (hash, password) = (user.password_hash.clone(), password.to_string());
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| KvError::Unavailable(format!("etcdserver: password check failed: {e}")))?
            .unwrap_or(false);
        if !matches {
            return Err(KvError::AuthFailed);
        }
        let info = AuthInfo {
            username: name.to_string(),
            revision: state.revision,
        };
        match &self.tokens {
            Tokens::Simple(t) => t.issue(info.username),
            Tokens::Jwt(t) => t.issue(&info),
        }
    }

    /// Forgets `username`'s simple tokens (its password changed or it was deleted, as
    /// etcd's `invalidateUser`). JWTs cannot be recalled; they expire.
    pub fn forget_user_tokens(&self, username: &str) {
        if let Tokens::Simple(t) = &self.tokens {
            t.lock().retain(|_, token| token.username != username);
        }
    }

    /// Forgets every simple token (auth was disabled: etcd drops them too).
    pub fn forget_tokens(&self) {
        if let Tokens::Simple(t) = &self.tokens {
            t.clear();
        }
    }

    /// The bcrypt hash of `password` at `--bcrypt-cost`, computed off this thread.
    pub async fn hash_password(&self, password: &str) -> Result<String, KvError> {
        let (password, cost) = (password.to_string(), self.bcrypt_cost);
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| KvError::Unavailable(format!("etcdserver: password hashing failed: {e}")))?
            .map_err(|e| KvError::Unavailable(format!("etcdserver: password hashing failed: {e}")))
    }

    /// etcd's `IsAdminPermitted` with the etcdserver texts (Auth and Cluster services).
    pub fn check_admin(&self, caller: &Caller) -> Result<(), KvError> {
        if !self.shared.enabled() {
            return Ok(());
        }
        self.shared.snapshot().check_admin(caller.as_ref())
    }

    /// etcd 3.4's Maintenance admin check: the auth package's own texts, sent as
    /// `codes.Unknown` (Defragment, Snapshot, Hash, HashKV, MoveLeader).
    pub fn check_maintenance_admin(&self, caller: Result<Caller, KvError>) -> Result<(), KvError> {
        let as_auth_error = |err: KvError| match err {
            KvError::InvalidAuthToken => KvError::RawAuth("auth: invalid auth token"),
            KvError::UserEmpty => KvError::RawAuth("auth: user name is empty"),
            KvError::UserNotFound => KvError::RawAuth("auth: user name not found"),
            KvError::PermissionDenied => KvError::RawAuth("auth: permission denied"),
            other => other,
        };
        let caller = caller.map_err(as_auth_error)?;
        self.check_admin(&caller).map_err(as_auth_error)
    }

    /// May `caller` read every key of `key`/`range_end`?
    pub fn check_range(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), KvError> {
        self.check(caller, key, range_end, Access::Read)
    }

    /// etcd's checks of a put (without the lease's keys: see [`Self::check_keys_writable`]).
    pub fn check_put(&self, caller: &Caller, r: &PbPutRequest) -> Result<(), KvError> {
        self.check(caller, &r.key, &[], Access::Write)?;
        if r.prev_kv {
            self.check(caller, &r.key, &[], Access::Read)?;
        }
        Ok(())
    }

    /// etcd's checks of a delete: write on the range, and read too for prev_kv.
    pub fn check_delete(&self, caller: &Caller, r: &PbDeleteRequest) -> Result<(), KvError> {
        self.check(caller, &r.key, &r.range_end, Access::Write)?;
        if r.prev_kv {
            self.check(caller, &r.key, &r.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// etcd's `checkTxnReqsPermission`: read on every compare's range, and each op's own
    /// permission in both branches, nested txns included.
    pub fn check_txn(&self, caller: &Caller, r: &PbTxnRequest) -> Result<(), KvError> {
        if !self.shared.enabled() {
            return Ok(());
        }
        for c in &r.compare {
            self.check(caller, &c.key, &c.range_end, Access::Read)?;
        }
        for op in r.success.iter().chain(&r.failure) {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(range)) => {
                    self.check(caller, &range.key, &range.range_end, Access::Read)?
                }
                Some(PbTxnOpRequest::RequestPut(put)) => self.check_put(caller, put)?,
                Some(PbTxnOpRequest::RequestDeleteRange(del)) => self.check_delete(caller, del)?,
                Some(PbTxnOpRequest::RequestTxn(nested)) => self.check_txn(caller, nested)?,
                None => {}
            }
        }
        Ok(())
    }

    /// etcd's `checkLeasePuts`: write on every key attached to a lease, for revoking it or
    /// attaching another key to it.
    pub fn check_keys_writable<'a>(
        &self,
        caller: &Caller,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), KvError> {
        if !self.shared.enabled() {
            return Ok(());
        }
        for key in keys {
            self.check(caller, key, &[], Access::Write)?;
        }
        Ok(())
    }

    fn check(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), KvError> {
        if !self.shared.enabled() {
            return Ok(());
        }
        self.shared
            .snapshot()
            .check_access(caller.as_ref(), key, range_end, access)
    }
}

/// Simple tokens: random strings remembered with their user, auth revision and deadline.
struct SimpleTokens {
    ttl: Duration,
    live: Mutex<HashMap<String, SimpleToken>>,
    issued: AtomicU64,
}

struct SimpleToken {
    username: String,
    expires: Instant,
}

impl SimpleTokens {
    fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens {
            ttl,
            live: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimpleToken>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// etcd's form: 16 random letters, a dot, a sequence number.
    fn issue(&self, username: String) -> Result<String, KvError> {
        let seq = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("{}.{seq}", random_letters(SIMPLE_TOKEN_LETTERS)?);
        let now = Instant::now();
        let mut live = self.lock();
        if seq.is_multiple_of(SWEEP_EVERY_ISSUED) || live.len() >= SIMPLE_TOKENS_MAX {
            live.retain(|_, t| t.expires > now);
        }
        if live.len() >= SIMPLE_TOKENS_MAX {
            return Err(KvError::Unavailable(
                "etcdserver: too many live auth tokens".into(),
            ));
        }
        live.insert(
            token.clone(),
            SimpleToken {
                username,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// A live token's user; its TTL starts over (etcd's simple tokens expire after `ttl`
    /// without use).
    fn verify(&self, token: &str) -> Result<String, KvError> {
        let now = Instant::now();
        let mut live = self.lock();
        match live.get_mut(token) {
            Some(t) if t.expires > now => {
                t.expires = now + self.ttl;
                Ok(t.username.clone())
            }
            Some(_) => {
                live.remove(token);
                Err(KvError::InvalidAuthToken)
            }
            None => Err(KvError::InvalidAuthToken),
        }
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

/// `n` random ASCII letters from the OS's generator (rejection sampling: no bias).
fn random_letters(n: usize) -> Result<String, KvError> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::getrandom(&mut buf)
            .map_err(|e| KvError::Unavailable(format!("etcdserver: no randomness: {e}")))?;
        for b in buf {
            // 208 = 4 * 52: bytes past it would favour the first letters.
            if b < 208 && out.len() < n {
                out.push(LETTERS[usize::from(b) % LETTERS.len()] as char);
            }
        }
    }
    Ok(out)
}

/// etcd's JWT claims.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    /// Seconds since the epoch.
    exp: u64,
}

struct JwtTokens {
    algorithm: jsonwebtoken::Algorithm,
    signing: Option<jsonwebtoken::EncodingKey>,
    verifying: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

impl JwtTokens {
    fn new(options: &TokenOptions) -> Result<JwtTokens, String> {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
        let TokenOptions::Jwt {
            sign_method,
            private_key,
            public_key,
            ttl,
        } = options
        else {
            return Err("not a jwt configuration".into());
        };
        let algorithm: Algorithm = sign_method
            .parse()
            .map_err(|_| format!("--auth-token: unknown sign-method {sign_method:?}"))?;
        let bad = |what: &str, e: jsonwebtoken::errors::Error| {
            format!("--auth-token: {what} key does not suit {sign_method}: {e}")
        };
        let family = match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => 'r',
            Algorithm::ES256 | Algorithm::ES384 => 'e',
            Algorithm::EdDSA => 'd',
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => 'h',
        };
        let signing = match private_key {
            None => None,
            Some(pem) => Some(match family {
                'r' => EncodingKey::from_rsa_pem(pem).map_err(|e| bad("private", e))?,
                'e' => EncodingKey::from_ec_pem(pem).map_err(|e| bad("private", e))?,
                'd' => EncodingKey::from_ed_pem(pem).map_err(|e| bad("private", e))?,
                _ => EncodingKey::from_secret(pem),
            }),
        };
        let verifying = match (family, public_key, private_key) {
            ('h', _, Some(secret)) => DecodingKey::from_secret(secret),
            ('h', _, None) => return Err("--auth-token: HS* needs priv-key (the secret)".into()),
            (_, None, _) => return Err("--auth-token: jwt needs pub-key=PATH".into()),
            ('r', Some(pem), _) => DecodingKey::from_rsa_pem(pem).map_err(|e| bad("public", e))?,
            ('e', Some(pem), _) => DecodingKey::from_ec_pem(pem).map_err(|e| bad("public", e))?,
            (_, Some(pem), _) => DecodingKey::from_ed_pem(pem).map_err(|e| bad("public", e))?,
        };
        let tokens = JwtTokens {
            algorithm,
            signing,
            verifying,
            ttl: *ttl,
        };
        if tokens.signing.is_some() {
            // A token this member signs must verify: catches keys of two different pairs
            // at start instead of at every request.
            let probe = AuthInfo {
                username: "probe".into(),
                revision: 1,
            };
            let verified = tokens
                .issue(&probe)
                .map_err(|e| format!("--auth-token: cannot sign with priv-key: {e}"))
                .and_then(|token| {
                    tokens.verify(&token).map_err(|_| {
                        "--auth-token: a token signed with priv-key does not verify with pub-key \
                         (keys of different pairs?)"
                            .to_string()
                    })
                })?;
            assert_eq!(verified, probe, "a verified token carries what was signed");
        }
        Ok(tokens)
    }

    fn issue(&self, info: &AuthInfo) -> Result<String, KvError> {
        let key = self.signing.as_ref().ok_or_else(|| {
            KvError::Unavailable("etcdserver: this member has no jwt private key".into())
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: info.username.clone(),
            revision: info.revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.algorithm), &claims, key)
            .map_err(|e| KvError::Unavailable(format!("etcdserver: cannot sign token: {e}")))
    }

    fn verify(&self, token: &str) -> Result<AuthInfo, KvError> {
        let mut validation = jsonwebtoken::Validation::new(self.algorithm);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation)
            .map_err(|_| KvError::InvalidAuthToken)?;
        Ok(AuthInfo {
            username: data.claims.username,
            revision: data.claims.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_specs_parse_like_etcd() {
        let ttl = Duration::from_secs(7);
        let none =
            |_: &str| -> std::io::Result<Vec<u8>> { Err(std::io::ErrorKind::NotFound.into()) };
        assert_eq!(
            TokenOptions::parse("simple", ttl, none),
            Ok(TokenOptions::Simple { ttl })
        );
        assert!(TokenOptions::parse("opaque", ttl, none).is_err());
        assert!(TokenOptions::parse("jwt,sign-method=RS256", ttl, none).is_err());
        assert!(
            TokenOptions::parse("jwt,pub-key=/nonexistent,sign-method=RS256", ttl, none)
                .unwrap_err()
                .contains("cannot read")
        );
        let secret = |_: &str| Ok(b"a shared secret of some length".to_vec());
        let parsed = TokenOptions::parse("jwt,priv-key=k,sign-method=HS256,ttl=1m30s", ttl, secret)
            .expect("HS256 with a secret");
        match parsed {
            TokenOptions::Jwt { ttl, .. } => assert_eq!(ttl, Duration::from_secs(90)),
            other => panic!("parsed {other:?}"),
        }
        assert!(TokenOptions::parse("jwt,priv-key=k,sign-method=XX1", ttl, secret).is_err());
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn simple_tokens_expire_after_their_ttl_without_use() {
        // One second: a loaded machine may stall a thread for a while between two lines.
        let tokens = SimpleTokens::new(Duration::from_secs(1));
        let token = tokens.issue("u".into()).unwrap();
        let (letters, seq) = token.split_once('.').expect("letters.seq");
        assert_eq!(letters.len(), SIMPLE_TOKEN_LETTERS);
        assert!(letters.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_eq!(seq, "1");
        assert_eq!(tokens.verify(&token), Ok("u".to_string()));
        assert_eq!(tokens.verify("nope.1"), Err(KvError::InvalidAuthToken));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(tokens.verify(&token), Err(KvError::InvalidAuthToken));
        assert!(tokens.lock().is_empty(), "an expired token is forgotten");
    }

    #[test]
    fn jwt_tokens_carry_user_and_revision_and_reject_tampering() {
        let options = TokenOptions::Jwt {
            sign_method: "HS256".into(),
            private_key: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            public_key: None,
            ttl: Duration::from_secs(60),
        };
        let jwt = JwtTokens::new(&options).unwrap();
        let info = AuthInfo {
            username: "alice".into(),
            revision: 9,
        };
        let token = jwt.issue(&info).unwrap();
        assert_eq!(jwt.verify(&token), Ok(info));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(jwt.verify(&forged), Err(KvError::InvalidAuthToken));
        let expired = JwtTokens::new(&TokenOptions::Jwt {
            sign_method: "HS256".into(),
            private_key: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            public_key: None,
            ttl: Duration::ZERO,
        })
        .unwrap();
        let old = expired
            .issue(&AuthInfo {
                username: "alice".into(),
                revision: 9,
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(expired.verify(&old), Err(KvError::InvalidAuthToken));
    }

    /// A store with auth enabled: root (root role) and `u1`, whose password is hashed by a
    /// gate at bcrypt cost 4.
    async fn gate_with_users() -> (corekv_engine::mvcc::Store, AuthGate) {
        use corekv_engine::pb::{PbAuthUserAddRequest, PbAuthUserGrantRoleRequest};
        use corekv_engine::request::{AuthCommand, Command};
        let mut store = corekv_engine::mvcc::Store::new();
        store.set_change_tracking(false);
        let options = AuthOptions {
            bcrypt_cost: 4,
            ..AuthOptions::default()
        };
        let gate = AuthGate::new(store.auth_shared(), &options).unwrap();
        for name in ["root", "u1"] {
            let hashed_password = gate.hash_password(&format!("{name}-pw")).await.unwrap();
            assert!(hashed_password.starts_with("$2b$04$"), "{hashed_password}");
            let add = PbAuthUserAddRequest {
                name: name.into(),
                hashed_password,
                ..Default::default()
            };
            store
                .apply(&Command::Auth(AuthCommand::UserAdd(add)))
                .unwrap();
        }
        let grant = PbAuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        };
        for cmd in [AuthCommand::UserGrantRole(grant), AuthCommand::Enable] {
            store.apply(&Command::Auth(cmd)).unwrap();
        }
        (store, gate)
    }

    #[tokio::test]
    async fn authenticate_checks_passwords_with_bcrypt_and_issues_working_tokens() {
        let (_store, gate) = gate_with_users().await;
        assert!(gate.enabled(), "the gate sees the store's applied switch");
        assert_eq!(
            gate.authenticate("u1", "wrong").await,
            Err(KvError::AuthFailed)
        );
        assert_eq!(
            gate.password_checks(),
            1,
            "a wrong password went through bcrypt"
        );
        assert_eq!(
            gate.authenticate("ghost", "x").await,
            Err(KvError::AuthFailed)
        );
        assert_eq!(
            gate.password_checks(),
            1,
            "an unknown user costs no bcrypt (etcd)"
        );
        let token = gate.authenticate("u1", "u1-pw").await.unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION_METADATA, token.parse().unwrap());
        let caller = gate.caller(&headers, &http::Extensions::new()).unwrap();
        assert_eq!(caller.as_ref().map(|c| c.username.as_str()), Some("u1"));
        assert_eq!(gate.check_admin(&caller), Err(KvError::PermissionDenied));
        gate.forget_tokens();
        assert_eq!(
            gate.caller(&headers, &http::Extensions::new()),
            Err(KvError::InvalidAuthToken)
        );
        // The certificate's name counts only with --client-cert-auth.
        let mut ext = http::Extensions::new();
        ext.insert(PeerCertName("root".into()));
        assert_eq!(gate.caller(&http::HeaderMap::new(), &ext), Ok(None));
    }

    #[test]
    fn a_wrong_password_goes_through_bcrypt_at_the_stored_cost() {
        // bcrypt's work doubles with each cost step: a check against a cost-12 hash does
        // 256 times the work of one against a cost-4 hash. Comparing the two (rather than
        // a wall-clock threshold) shows a wrong password is verified, not short-cut.
        let cheap = bcrypt::hash("secret", 4).unwrap();
        let dear = bcrypt::hash("secret", 12).unwrap();
        assert!(dear.starts_with("$2b$12$"));
        let time = |hash: &str| {
            let started = Instant::now();
            assert!(!bcrypt::verify("wrong", hash).unwrap());
            started.elapsed()
        };
        let (t_cheap, t_dear) = (time(&cheap), time(&dear));
        assert!(
            t_dear > t_cheap * 16,
            "cost 12 took {t_dear:?}, cost 4 {t_cheap:?}"
        );
    }
}

#[cfg(test)]
mod jwt_key_tests {
    use super::*;

    #[test]
    fn keys_of_different_pairs_are_refused_at_start() {
        let a = rcgen::KeyPair::generate().unwrap();
        let b = rcgen::KeyPair::generate().unwrap();
        let files: HashMap<&str, Vec<u8>> = HashMap::from([
            ("a.key", a.serialize_pem().into_bytes()),
            ("a.pub", a.public_key_pem().into_bytes()),
            ("b.pub", b.public_key_pem().into_bytes()),
        ]);
        let read = |path: &str| {
            files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        };
        let ttl = Duration::from_secs(1);
        TokenOptions::parse(
            "jwt,pub-key=a.pub,priv-key=a.key,sign-method=ES256",
            ttl,
            read,
        )
        .expect("a matching pair");
        let err = TokenOptions::parse(
            "jwt,pub-key=b.pub,priv-key=a.key,sign-method=ES256",
            ttl,
            read,
        )
        .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let verify_only = TokenOptions::parse("jwt,pub-key=a.pub,sign-method=ES256", ttl, read);
        assert!(verify_only.is_ok(), "a member may only verify");
    }
}
