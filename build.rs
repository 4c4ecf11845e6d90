//! Emits the linker arguments a Node-API addon needs (undefined `napi_*` symbols resolved by the host).
fn main() {
    napi_build::setup();
}
