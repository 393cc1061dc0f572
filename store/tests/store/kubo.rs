//! The kubo store against real Kubo (the version in `scripts/go-peers/versions`).

use std::time::Duration;

use cidmirror_store::{Error, FileSource, KuboStore, PinReason, Profile, PutOptions, Store};

use crate::support::kubo::Kubo;
use crate::support::{drain, pseudo_random};

async fn rpc(node: &Kubo, path: &str) -> (u16, String) {
    // A plain HTTP client, independent of the store's own, to look at the node.
    let url = format!("{}/api/v0/{path}", node.api);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "20", "-X", "POST", "-w", "\n%{http_code}", &url])
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubo_store_passes_the_conformance_suite_on_a_real_node() {
    let node = Kubo::start();
    let dir = tempfile::tempdir().unwrap();
    let store = KuboStore::connect(&node.api, dir.path()).await.unwrap();
    crate::conformance::run(&store).await;

    // Pins by reason are one pin on the node, as deep as the deepest reason.
    let data = pseudo_random("kubo-pins", 700_000);
    let f = store
        .put_file(
            FileSource::Reader(Box::new(std::io::Cursor::new(data.clone()))),
            PutOptions {
                params: Profile::UnixfsV1_2025.params(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deep: PinReason = "snapshot:1".parse().unwrap();
    let shallow = PinReason::direct("follow:1");
    store.pin(&f.cid, &shallow, None).await.unwrap();
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("direct"), "{ls}");
    store.pin(&f.cid, &deep, None).await.unwrap();
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("recursive"), "{ls}");
    assert!(store.unpin(&f.cid, &deep).await.unwrap());
    let (_, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(ls.contains("direct") && !ls.contains("recursive"), "{ls}");
    assert_eq!(store.unpin_all(&shallow).await.unwrap(), 1);
    let (code, ls) = rpc(&node, &format!("pin/ls?arg={}", f.cid)).await;
    assert!(
        code != 200 || !ls.contains(&f.cid.to_string()),
        "{code} {ls}"
    );

    // The file reads back through the node's own gateway.
    let url = format!("{}/ipfs/{}", node.gateway, f.cid);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-f", "-m", "20", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "gateway GET {url}");
    assert_eq!(out.stdout, data, "gateway bytes");
    let (_, s) = store.read(&f.cid, None).await.unwrap();
    assert_eq!(drain(s).await, data);
}

#[tokio::test]
async fn a_node_that_is_not_there_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        KuboStore::connect(&api, dir.path()),
    )
    .await
    .expect("bounded")
    .err()
    .expect("no node there");
    assert!(matches!(err, Error::Kubo { .. }), "{err}");
    assert!(err.to_string().contains(&api), "{err}");
    let bad = KuboStore::connect("ftp://x", dir.path())
        .await
        .err()
        .unwrap();
    assert!(bad.to_string().contains("http://HOST:PORT"), "{bad}");
}
