//! The server's wire-format module (`src/proto.rs`, whose own unit tests
//! run with the library's) checked against the byte layouts in the
//! protocol text.

use nbd_server::proto;

#[test]
fn simple_reply_layout() {
    let reply = proto::simple_reply(0x1122_3344_5566_7788, 28);
    assert_eq!(reply[..4], [0x67, 0x44, 0x66, 0x98]);
    assert_eq!(reply[4..8], [0, 0, 0, 28]);
    assert_eq!(reply[8..], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
}

#[test]
fn greeting_and_option_reply_layout() {
    let greeting = proto::server_greeting();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    assert_eq!(&greeting[8..16], b"IHAVEOPT");
    assert_eq!(greeting[16..], [0, 3]);
    let mut reply = Vec::new();
    proto::option_reply(&mut reply, 7, proto::REP_ERR_UNSUP, b"no");
    assert_eq!(reply[..8], 0x0003_e889_0455_65a9u64.to_be_bytes());
    assert_eq!(reply[8..12], [0, 0, 0, 7]);
    assert_eq!(reply[12..16], [0x80, 0, 0, 1]);
    assert_eq!(reply[16..20], [0, 0, 0, 2]);
    assert_eq!(&reply[20..], b"no");
}

#[test]
fn info_layouts() {
    let export = proto::info_export(0x0102_0304_0506_0708, 0x0d45);
    assert_eq!(export, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x0d, 0x45]);
    let sizes = proto::info_block_size(1, 4096, 32 << 20);
    assert_eq!(sizes, [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]);
}
