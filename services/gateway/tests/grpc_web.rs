//! gRPC-Web for browsers: a plain HTTP/1.1 POST in gRPC-Web framing reaches the
//! gateway's services, and CORS preflights are answered for allowed origins.

use std::io::{Read, Write};
use std::time::Duration;

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);

async fn gateway(origins: &str) -> (rapport_testkit::Running, String) {
    let db = rapport_testkit::migrated(&[GATEWAY]).await;
    let pool = GATEWAY.pool(&db, 2).await;
    let creds = rapport_gateway::create_operator_key(&pool, "operator")
        .await
        .unwrap();
    let config = rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        require_internal_auth: false,
        grpc_web_origins: Some(origins.into()),
        ..Default::default()
    };
    let running = GATEWAY.serve(config).await;
    (running, creds.api_key)
}

/// Sends one HTTP/1.1 request and returns the raw response.
fn http(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test]
async fn browsers_call_the_gateway_with_grpc_web() {
    let (gw, key) = gateway("https://app.example").await;
    let addr = gw.addr;
    let response = tokio::task::spawn_blocking(move || {
        // An empty GetTenantRequest in gRPC-Web framing: flag 0, length 0.
        let mut request = format!(
            "POST /rapport.gateway.v1.AdminService/GetTenant HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
             Origin: https://app.example\r\nAuthorization: Bearer {key}\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&[0, 0, 0, 0, 0]);
        http(addr, &request)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/grpc-web"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{text}"
    );
    assert!(
        text.contains("operator"),
        "the tenant in the message frame: {text}"
    );
    assert!(text.contains("grpc-status:0"), "the trailer frame: {text}");

    // A CORS preflight from an allowed origin is answered; another origin is not allowed.
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /rapport.gateway.v1.AdminService/GetTenant HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type,x-grpc-web\r\n\
             Connection: close\r\n\r\n"
        )
    };
    let allowed = preflight("https://app.example");
    let other = preflight("https://evil.example");
    let (ok, denied) = tokio::task::spawn_blocking(move || {
        (http(addr, allowed.as_bytes()), http(addr, other.as_bytes()))
    })
    .await
    .unwrap();
    let ok = String::from_utf8_lossy(&ok).to_ascii_lowercase();
    assert!(
        ok.contains("access-control-allow-origin: https://app.example"),
        "{ok}"
    );
    assert!(ok.contains("authorization"), "{ok}");
    let denied = String::from_utf8_lossy(&denied).to_ascii_lowercase();
    assert!(!denied.contains("access-control-allow-origin"), "{denied}");
}
