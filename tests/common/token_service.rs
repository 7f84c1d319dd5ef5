//! A small Bearer token service of ours: `GET /token?service=S&scope=repository:R:pull,push`
//! with Basic credentials answers `{"token","expires_in"}`. Two kinds of tokens:
//! - opaque ones, which the ECR proxy (in Bearer mode) checks by asking this service;
//! - JWTs signed with a fresh P-256 key whose self-signed certificate (made with `openssl`)
//!   the real registry trusts through its `auth: token:` configuration ([`TokenService::registry_yaml`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::serve::{Cut, Resp, ServerTask, respond, spawn_server};

pub struct TokenState {
    pub user: String,
    pub password: String,
    pub ttl: Duration,
    /// token -> (granted scopes, expiry)
    tokens: Mutex<HashMap<String, (Vec<String>, Instant)>>,
    /// How many tokens were issued.
    pub issued: AtomicU32,
    /// Requests refused for bad credentials.
    pub refused: AtomicU32,
    /// Set for JWT tokens: the signing key and its certificate.
    jwt: Option<JwtSigner>,
}

/// Signs registry JWTs (ES256, certificate in `x5c`).
struct JwtSigner {
    key: std::sync::Arc<dyn rustls::sign::SigningKey>,
    cert_der: Vec<u8>,
    issuer: String,
    service: String,
}

pub const JWT_ISSUER: &str = "hoist-test-issuer";
pub const JWT_SERVICE: &str = "hoist-test-registry";

pub struct TokenService {
    pub addr: SocketAddr,
    pub state: Arc<TokenState>,
    task: ServerTask,
}

impl TokenState {
    /// Whether `token` grants `action` (`pull`/`push`) on `repo` and has not expired.
    pub fn allows(&self, token: &str, repo: &str, action: &str) -> bool {
        let tokens = self.tokens.lock().unwrap();
        let Some((scopes, expires)) = tokens.get(token) else {
            return false;
        };
        Instant::now() < *expires
            && scopes.iter().any(|s| {
                let mut parts = s.splitn(3, ':');
                parts.next() == Some("repository")
                    && parts.next() == Some(repo)
                    && parts
                        .next()
                        .is_some_and(|acts| acts.split(',').any(|a| a == action))
            })
    }

    /// Expires every token now.
    pub fn expire_all(&self) {
        for (_, (_, e)) in self.tokens.lock().unwrap().iter_mut() {
            *e = Instant::now();
        }
    }
}

impl TokenService {
    pub async fn start(user: &str, password: &str, ttl: Duration) -> TokenService {
        Self::start_with(user, password, ttl, None).await
    }

    /// A service issuing JWTs the real registry accepts; key and certificate go in `dir`.
    pub async fn start_jwt(
        user: &str,
        password: &str,
        ttl: Duration,
        dir: &std::path::Path,
    ) -> TokenService {
        super::require_tool("openssl");
        let (key_pem, cert_pem) = (dir.join("token-key.pem"), dir.join("token-cert.pem"));
        hoist_testkit::tools::run_ok(
            std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                ])
                .arg("-keyout")
                .arg(&key_pem)
                .arg("-out")
                .arg(&cert_pem)
                .args(["-subj", "/CN=hoist-test-token", "-days", "2"]),
            "openssl",
        );
        let key_der = pem_body(&std::fs::read_to_string(&key_pem).unwrap());
        let cert_der = pem_body(&std::fs::read_to_string(&cert_pem).unwrap());
        hoist::registry::install_crypto_provider();
        let key = rustls::crypto::ring::sign::any_ecdsa_type(
            &rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .expect("P-256 key");
        let signer = JwtSigner {
            key,
            cert_der,
            issuer: JWT_ISSUER.into(),
            service: JWT_SERVICE.into(),
        };
        Self::start_with(user, password, ttl, Some(signer)).await
    }

    /// The registry's `auth: token:` section trusting this service (JWT mode).
    pub fn registry_yaml(&self, dir: &std::path::Path) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {JWT_SERVICE}\n    issuer: {JWT_ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            dir.join("token-cert.pem").display()
        )
    }

    async fn start_with(
        user: &str,
        password: &str,
        ttl: Duration,
        jwt: Option<JwtSigner>,
    ) -> TokenService {
        let state = Arc::new(TokenState {
            user: user.into(),
            password: password.into(),
            ttl,
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            jwt,
        });
        let st = state.clone();
        let (addr, task) = spawn_server(move |req| {
            let st = st.clone();
            async move { Ok::<Resp, Cut>(issue(&st, &req)) }
        })
        .await;
        TokenService { addr, state, task }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

fn issue<B>(st: &TokenState, req: &hyper::Request<B>) -> Resp {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", st.user, st.password))
    );
    let authz = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if authz != Some(expected.as_str()) {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return respond(401, &[], r#"{"details":"bad credentials"}"#);
    }
    let query = req.uri().query().unwrap_or("");
    let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let token = match &st.jwt {
        Some(signer) => signer.sign(&st.user, &scopes, st.ttl),
        None => format!("tok-{:016x}", rand::random::<u64>()),
    };
    st.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), (scopes, Instant::now() + st.ttl));
    st.issued.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({"token": token, "expires_in": st.ttl.as_secs()}).to_string();
    respond(200, &[("content-type", "application/json".into())], body)
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM base64")
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// ASN.1 `SEQUENCE { INTEGER r, INTEGER s }` -> JWS `r || s` (32 bytes each).
fn der_to_jws(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut i = 2; // SEQUENCE tag + short length (ECDSA P-256 signatures are < 128 bytes)
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

impl JwtSigner {
    fn sign(&self, subject: &str, scopes: &[String], ttl: Duration) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<_> = scopes
            .iter()
            .filter_map(|s| {
                let mut p = s.splitn(3, ':');
                let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let header = serde_json::json!({
            "typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now + ttl.as_secs(), "nbf": now - 10, "iat": now,
            "jti": format!("{:016x}", rand::random::<u64>()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signer = self
            .key
            .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("ES256 signer");
        let der = signer.sign(signing_input.as_bytes()).expect("sign");
        format!("{signing_input}.{}", b64url(&der_to_jws(&der)))
    }
}
