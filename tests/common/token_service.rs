//! A small Bearer token service of ours: `GET /token?service=S&scope=repository:R:pull,push`
//! with Basic credentials answers `{"token","expires_in"}`. The ECR proxy (in Bearer mode)
//! asks it whether a token is valid for a repository and action, so the whole docker token
//! flow runs without JWT signing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::serve::{Cut, Resp, respond, spawn_server};

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
}

pub struct TokenService {
    pub addr: SocketAddr,
    pub state: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        let state = Arc::new(TokenState {
            user: user.into(),
            password: password.into(),
            ttl,
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU32::new(0),
            refused: AtomicU32::new(0),
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
    let token = format!("tok-{:016x}", rand::random::<u64>());
    st.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), (scopes, Instant::now() + st.ttl));
    st.issued.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({"token": token, "expires_in": st.ttl.as_secs()}).to_string();
    respond(200, &[("content-type", "application/json".into())], body)
}
