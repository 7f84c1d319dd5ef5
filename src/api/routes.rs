//! The route table: the single list of what the daemon serves. The server's dispatch reads it
//! through [`match_route`], the client builds its requests from it ([`Endpoint::method`],
//! [`Endpoint::path`]), so each path is written once, here.

use super::ids::{JobId, JobIdError};

/// A route's path under the API version; the version is written only in this macro.
macro_rules! v1 {
    ($path:literal) => {
        concat!("/v1", $path)
    };
}

/// The API version prefix. A breaking change gets `/v2`, never an edit of `/v1`.
pub const API_PREFIX: &str = v1!("");

/// Every endpoint of the socket API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Health,
    Metrics,
    SubmitJob,
    ListJobs,
    GetJob,
    DeleteJob,
    JobEvents,
    PauseJob,
    ResumeJob,
    CancelJob,
    RetryJob,
    GetBandwidth,
    SetBandwidth,
    SetJobBandwidth,
}

/// One row of the route table: method, path template (OpenAPI syntax) and endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// The route table: the single list of what the daemon serves.
pub const ROUTES: &[Route] = &[
    route("GET", v1!("/health"), Endpoint::Health),
    route("GET", v1!("/metrics"), Endpoint::Metrics),
    route("POST", v1!("/jobs"), Endpoint::SubmitJob),
    route("GET", v1!("/jobs"), Endpoint::ListJobs),
    route("GET", v1!("/jobs/{id}"), Endpoint::GetJob),
    route("DELETE", v1!("/jobs/{id}"), Endpoint::DeleteJob),
    route("GET", v1!("/jobs/{id}/events"), Endpoint::JobEvents),
    route("POST", v1!("/jobs/{id}/pause"), Endpoint::PauseJob),
    route("POST", v1!("/jobs/{id}/resume"), Endpoint::ResumeJob),
    route("POST", v1!("/jobs/{id}/cancel"), Endpoint::CancelJob),
    route("POST", v1!("/jobs/{id}/retry"), Endpoint::RetryJob),
    route(
        "PUT",
        v1!("/jobs/{id}/bandwidth"),
        Endpoint::SetJobBandwidth,
    ),
    route("GET", v1!("/bandwidth"), Endpoint::GetBandwidth),
    route("PUT", v1!("/bandwidth"), Endpoint::SetBandwidth),
];

/// The job actions `hoist pause|resume|cancel|retry` send: `POST /v1/jobs/{id}/ACTION`.
const JOB_ACTIONS: [Endpoint; 4] = [
    Endpoint::PauseJob,
    Endpoint::ResumeJob,
    Endpoint::CancelJob,
    Endpoint::RetryJob,
];

impl Endpoint {
    /// This endpoint's row of the route table.
    pub fn route(self) -> &'static Route {
        ROUTES
            .iter()
            .find(|r| r.endpoint == self)
            .expect("the route table has a row for every endpoint")
    }

    /// The HTTP method to send.
    pub fn method(self) -> &'static str {
        self.route().method
    }

    /// The path to request: the route's template with `{id}` replaced by `id`. Without an `id`
    /// a template keeps its `{id}`, which the daemon refuses as a bad job ID.
    pub fn path(self, id: Option<&JobId>) -> String {
        fill(self.route().path, id)
    }

    /// The job action named `action` (`pause`, `resume`, `cancel`, `retry`): the last segment
    /// of its path in the route table.
    pub fn job_action(action: &str) -> Option<Endpoint> {
        JOB_ACTIONS
            .into_iter()
            .find(|e| e.route().path.rsplit('/').next() == Some(action))
    }
}

/// `template` with its `{...}` segment replaced by `id`.
fn fill(template: &str, id: Option<&JobId>) -> String {
    match id {
        Some(id) => template
            .split('/')
            .map(|seg| if is_param(seg) { id.as_str() } else { seg })
            .collect::<Vec<_>>()
            .join("/"),
        None => template.to_string(),
    }
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The path of a job endpoint, for tests and tools probing paths (the client names
/// endpoints instead): `job_path(&id, "pause")` is `/v1/jobs/ID/pause`. Built from the route
/// table's job path.
pub fn job_path(id: &JobId, action: &str) -> String {
    let item = Endpoint::GetJob.route().path;
    if action.is_empty() {
        fill(item, Some(id))
    } else {
        fill(&format!("{item}/{action}"), Some(id))
    }
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint {0}: see proto/openapi.yaml for the API")]
    NotFound(String),
    #[error("{method} is not allowed on {path}: allowed are {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    #[error(transparent)]
    BadJobId(#[from] JobIdError),
}

/// Matches a request to an endpoint and the `{id}` path parameter, if the route has one.
pub fn match_route(method: &str, path: &str) -> Result<(Endpoint, Option<JobId>), RouteError> {
    let mut allowed = Vec::new();
    let mut matched = None;
    for route in ROUTES {
        if let Some(param) = match_template(route.path, path) {
            allowed.push(route.method);
            if route.method == method {
                matched = Some((route.endpoint, param));
            }
        }
    }
    match matched {
        Some((endpoint, Some(id))) => Ok((endpoint, Some(id.parse()?))),
        Some((endpoint, None)) => Ok((endpoint, None)),
        None if allowed.is_empty() => Err(RouteError::NotFound(path.to_string())),
        None => Err(RouteError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allowed: allowed.join(", "),
        }),
    }
}

/// `Some(param)` when `path` fits `template`; `param` is the `{...}` segment, if any.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut param = None;
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if is_param(ts) && !ps.is_empty() => param = Some(ps),
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match() {
        let id = JobId::random();
        assert_eq!(
            match_route("GET", "/v1/jobs").unwrap(),
            (Endpoint::ListJobs, None)
        );
        assert_eq!(
            match_route("POST", &job_path(&id, "pause")).unwrap(),
            (Endpoint::PauseJob, Some(id.clone()))
        );
        assert_eq!(
            match_route("DELETE", &job_path(&id, "")).unwrap(),
            (Endpoint::DeleteJob, Some(id.clone()))
        );
        assert_eq!(
            match_route("PUT", &job_path(&id, "bandwidth")).unwrap(),
            (Endpoint::SetJobBandwidth, Some(id))
        );
        assert!(matches!(
            match_route("PUT", "/v1/jobs"),
            Err(RouteError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            match_route("GET", "/v1/nope"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            match_route("GET", "/v1/jobs/"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            match_route("GET", "/v1/jobs/xyz"),
            Err(RouteError::BadJobId(_))
        ));
    }

    /// What a client builds from an endpoint is what the server dispatches to that endpoint,
    /// and every route has its own endpoint (so `Endpoint::route` finds the only row).
    #[test]
    fn every_endpoint_path_routes_back_to_it() {
        let id = JobId::random();
        for row in ROUTES {
            let e = row.endpoint;
            assert_eq!(
                ROUTES.iter().filter(|r| r.endpoint == e).count(),
                1,
                "{e:?}"
            );
            let id = row.path.contains('{').then_some(&id);
            let (matched, param) = match_route(e.method(), &e.path(id)).unwrap();
            assert_eq!((matched, param.as_ref()), (e, id), "{e:?}");
            assert!(e.path(id).starts_with(API_PREFIX));
        }
    }

    #[test]
    fn job_actions_come_from_the_table() {
        for (name, e) in [
            ("pause", Endpoint::PauseJob),
            ("resume", Endpoint::ResumeJob),
            ("cancel", Endpoint::CancelJob),
            ("retry", Endpoint::RetryJob),
        ] {
            assert_eq!(Endpoint::job_action(name), Some(e));
            assert_eq!(e.method(), "POST");
        }
        assert_eq!(Endpoint::job_action("events"), None);
        assert_eq!(Endpoint::job_action("jobs"), None);
    }
}
