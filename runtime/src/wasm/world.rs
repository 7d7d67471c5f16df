//! Which imports a guest component may have.
//!
//! The linker could satisfy all of WASI, but a guest holds no ambient
//! authority: no files, sockets, clocks or HTTP. Components are checked
//! against this list before anything is instantiated, so a guest that reaches
//! outside the world is refused at load with the offending import named.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Interfaces a guest may import, without their `@version` suffix.
///
/// The WASI entries are what Rust's `std` for `wasm32-wasip2` pulls in for
/// printing, panics and hash-map seeds; none of them grants access to
/// anything outside the instance (stdin is empty, the environment is empty,
/// stdout and stderr go to the broker log).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "sandport:protocol/types",
    "sandport:protocol/host",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:io/poll",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The interface every guest must export.
pub const HANDLER_EXPORT: &str = "sandport:protocol/handler";

/// Strip the `@version` from an interface name.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(base, _)| base)
}

/// The imports of `component`, in order.
pub fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_string()).collect()
}

/// The imports of `component` that are not allowed, in order.
pub fn forbidden_imports(engine: &Engine, component: &Component) -> Vec<String> {
    imports(engine, component)
        .into_iter()
        .filter(|name| !ALLOWED_IMPORTS.contains(&unversioned(name)))
        .collect()
}

/// Whether `component` exports the handler interface (in any 0.x version);
/// whether it fits the world is checked when it is linked.
pub fn exports_handler(engine: &Engine, component: &Component) -> bool {
    let component_type = component.component_type();
    let mut exports = component_type.exports(engine);
    exports.any(|(name, _)| unversioned(name) == HANDLER_EXPORT)
}
