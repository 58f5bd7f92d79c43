//! Seed-compatible consume against the real broker.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_format_is_byte_exact() {
    let topic = topic("seed-format", 1).await;
    produce(&topic, 0, &[b"hello one", b"hello \"two\"\n"]).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={}", unique("g")))
        .await;
    // Frames may split the records differently; each frame must be exactly the seed's JSON.
    let expected = [
        "{\"message\":\"hello one\",\"offset\":0}",
        "{\"message\":\"hello \\\"two\\\"\\n\",\"offset\":1}",
    ];
    let mut n = 0;
    while n < 2 {
        let t = next_text(&mut ws, T).await;
        let k = serde_json::from_str::<Vec<serde_json::Value>>(&t)
            .unwrap()
            .len();
        assert_eq!(t, format!("[{}]", expected[n..n + k].join(",")));
        n += k;
    }
    close(ws).await;
    proxy.stop().await;
}
