//! Header names are bytes on the wire: Kafka does not check that they are UTF-8, and a producer
//! other than the Java client can write any. Such a name is shown with U+FFFD, never a crash.

mod common;

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use common::{client_config, next_text, topic, Proxy};
use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer};

/// Produces one record whose only header has the name `name` (raw bytes, no NUL).
fn produce_with_raw_header_name(topic: &str, name: &[u8], value: &[u8], payload: &[u8]) {
    let producer: BaseProducer = client_config().create().expect("producer");
    let topic_c = CString::new(topic).expect("topic name");
    let name_c = CString::new(name).expect("a header name without NUL");
    let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
    let vus = [
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TOPIC,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                cstr: topic_c.as_ptr(),
            },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
            rd::rd_kafka_vu_s__bindgen_ty_1 { i32_: 0 },
        ),
        // librdkafka copies the value (RD_KAFKA_MSG_F_COPY).
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                i: rd::RD_KAFKA_MSG_F_COPY,
            },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                    ptr: payload.as_ptr() as *mut c_void,
                    size: payload.len(),
                },
            },
        ),
        vu(
            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADER,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                header: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                    name: name_c.as_ptr() as *const c_char,
                    val: value.as_ptr() as *const c_void,
                    size: value.len() as isize,
                },
            },
        ),
    ];
    // SAFETY: every pointer in `vus` lives until the call returns, and librdkafka copies the
    // topic name, the value (MSG_F_COPY) and the header before it does.
    let err =
        unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len()) };
    assert!(err.is_null(), "rd_kafka_produceva refused the record");
    producer
        .flush(Duration::from_secs(10))
        .expect("the record reaches Kafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_shown_with_replacement_characters() {
    let topic = topic("hdr-bytes", 1).await;
    produce_with_raw_header_name(&topic, b"bad\xff\xfename", b"v", b"payload");
    let proxy = Proxy::start().await;
    for path in [
        // Through the session's batch fetch queue.
        format!("/v1/consume?topic={topic}&partition=0&from=earliest"),
        // Through the shared live-tail reader is not possible for an old record; a group
        // socket exercises the same encoder after a rebalance.
        format!("/v1/consume?topic={topic}&group={topic}-g&from=earliest"),
    ] {
        let mut ws = proxy.connect(&path).await;
        let frame = loop {
            let t = next_text(&mut ws, Duration::from_secs(20)).await;
            if t.contains("\"records\"") {
                break t;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&frame).expect("strict JSON");
        let r = &v["records"][0];
        assert_eq!(r["value"], "payload", "{frame}");
        assert_eq!(r["headers"][0]["key"], "bad\u{fffd}\u{fffd}name", "{frame}");
        assert_eq!(r["headers"][0]["value"], "v", "{frame}");
        common::close(ws).await;
    }
    proxy.stop().await;
}
