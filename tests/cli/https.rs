//! HTTPS for real: an upstream mirror and a fallback mirror behind TLS on 127.0.0.1, with a
//! certificate authority and a server certificate made here (rcgen). The binary trusts
//! what the system trusts (rustls-platform-verifier: on Linux the system's CA bundle, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set); a certificate it does not trust, or one for
//! another name, is refused with an error that names the host, and nothing is published.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::mirror::fixture::{self, standard_mirror};
use crate::mirror::runtime;
use crate::mirror::server::TestUpstream;
use crate::serve_support::Server;
use crate::support::*;

/// A CA, and a certificate for 127.0.0.1 it signed; the CA is written to `ca_pem`.
fn certificates(ca_pem: &Path) -> rustls::ServerConfig {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cidmirror test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    std::fs::write(ca_pem, ca_cert.pem()).expect("writing the CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key.into(),
        )
        .expect("server config")
}

/// TLS on 127.0.0.1 in front of a plain HTTP server at `backend`: every accepted
/// connection's decrypted bytes go to the backend and back. Stops with the runtime.
async fn tls_front(config: rustls::ServerConfig, backend: SocketAddr) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // the client refused the certificate
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("a 127.0.0.1:PORT URL")
}

fn mirror_once(upstream: &str) -> Vec<&str> {
    crate::mirror::mirror_args(upstream, &["--once"])
}

#[test]
fn an_https_upstream_is_refused_until_its_ca_is_trusted_then_syncs() {
    let rt = runtime();
    let t = TestDir::new();
    let m = standard_mirror();
    let ca = t.path("ca.pem");
    let config = certificates(&ca);
    let up = rt.block_on(TestUpstream::start(m.root()));
    let port = rt.block_on(tls_front(config, addr_of(&up.url)));
    let url = format!("https://127.0.0.1:{port}/");
    let d = t.data("pub");

    // Not trusted: the system's store does not have the test CA. A bundle without it
    // (SSL_CERT_FILE pointing elsewhere) changes nothing.
    let other = t.path("other.pem");
    certificates(&other);
    for env in [None, Some(&other)] {
        let mut c = d.cmd(mirror_once(&url));
        if let Some(f) = env {
            c.env("SSL_CERT_FILE", f);
        }
        let o = run_cmd(c);
        assert_eq!(o.status.code(), Some(1), "untrusted: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("127.0.0.1") && err.contains("certificate"),
            "the error names the host and the certificate: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    let st = d.ok_text(&["status"]);
    assert!(
        !st.contains("current        snapshot"),
        "nothing published: {st}"
    );

    // The right name is part of trust: the same certificate under "localhost" is refused.
    let by_name = format!("https://localhost:{port}/");
    let mut c = d.cmd(mirror_once(&by_name));
    c.env("SSL_CERT_FILE", &ca);
    let o = run_cmd(c);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("localhost"), "{}", stderr(&o));

    // Trusted through SSL_CERT_FILE: the sync passes; every file is in the snapshot.
    let mut c = d.cmd(mirror_once(&url));
    c.env("SSL_CERT_FILE", &ca);
    let o = run_cmd(c);
    assert_eq!(o.status.code(), Some(0), "trusted: {}", stderr(&o));
    let out = stdout(&o);
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("published snapshot 1 "))
        .and_then(|l| l.split_whitespace().next())
        .map(|r| r.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no publish line: {out}"));
    for repo in ["core", "extra"] {
        for (file, bytes) in m.files(repo) {
            let path = format!("{root}/{repo}/os/x86_64/{file}");
            assert_same_bytes(&d.ok(&["cat", &path]), &bytes, &path);
        }
    }
}

#[test]
fn a_follower_takes_files_from_an_https_fallback_mirror_it_trusts() {
    let rt = runtime();
    let t = TestDir::in_tmp();
    let m = standard_mirror();
    let ca = t.path("ca.pem");
    let config = certificates(&ca);
    let up = rt.block_on(TestUpstream::start(m.root()));
    let port = rt.block_on(tls_front(config, addr_of(&up.url)));
    let fallback = format!("https://127.0.0.1:{port}/");

    let pd = t.data("publisher");
    let o = pd.run(&mirror_once(s(m.root())));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p = Server::serve(&pd, &[]);
    p.wait_for_snapshot(1);
    let key = pd.ok_text(&["key", "show"]).trim().to_string();
    let fd = t.data("follower");
    let mut c = fd.cmd([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--follow",
        &p.base(),
        "--publisher-key",
        &key,
        "--fallback-mirror",
        &fallback,
        "--no-volunteers",
    ]);
    c.env("SSL_CERT_FILE", &ca);
    let f = Server::spawn_command(c, "serve --follow (HTTPS fallback)");
    f.wait_for_snapshot(1);
    // The only block source goes away: package files come from the HTTPS mirror alone.
    drop(p);
    let gamma = fixture::packages().get("gamma", "1.0");
    let rel = format!("core/os/x86_64/{}", gamma.filename);
    let r = f.get(&format!("/{rel}"));
    assert_eq!(r.status, 200, "{}", f.log());
    assert!(
        r.body == gamma.bytes(),
        "gamma through the HTTPS fallback mirror"
    );
    assert!(
        !up.requests_for(&rel).is_empty(),
        "the file came through the TLS front"
    );
}
