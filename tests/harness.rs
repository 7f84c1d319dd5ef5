//! The harness itself works: a real registry starts and answers the OCI API.
use crate::common;

#[test]
fn registry_starts_and_answers_v2() {
    let reg = common::TestRegistry::start();
    let (status, body) = common::http_get(reg.addr, "/v2/").expect("registry answers");
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    let (status, _) = common::http_get(reg.addr, "/v2/nothing/here/manifests/latest").unwrap();
    assert_eq!(status, 404);
}
