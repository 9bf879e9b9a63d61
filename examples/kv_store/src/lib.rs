//! The `kv_store` example's library: [`store`] is the store and its
//! protocol, [`scenario`] what it is tested with. The program
//! (`examples/kv_store.rs`) explores seeds or runs the store on a real disk;
//! `tests/kv_store_crash_safety.rs` is its test.

pub mod scenario;
pub mod store;
