//! Which imports a guest component may have.
//!
//! The linker satisfies all of WASI 0.2, but a guest holds no ambient
//! authority: its context has no preopened directory, no network, an empty
//! environment and an empty stdin, and its stdout and stderr go to the
//! broker log. So the WASI interfaces that toolchains' runtimes import
//! whether or not a protocol uses them (the preview 1 adapter that
//! cargo-component and wasi-libc builds use, for one) are allowed: through
//! them a guest reaches nothing outside its instance. The clocks are the
//! exception: they are real and a guest could wait on them, so they are a
//! grant (`grants.clocks`).
//! Components are checked before anything is instantiated; an import outside
//! this list, or a clock without the grant, is refused at load and named.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::Grants;

/// Interfaces every guest may import, without their `@version` suffix.
///
/// Rust's `std` for `wasm32-wasip2` pulls in the `io`, `cli` and `random`
/// entries for printing, panics and hash-map seeds; other toolchains also
/// the filesystem and sockets, which give nothing here (no directory is
/// preopened, every address is refused, names are not looked up).
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
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Interfaces a guest may import only with `grants.clocks`.
pub const CLOCK_IMPORTS: &[&str] = &["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];

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

/// The imports of a component that it may not have, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RefusedImports {
    /// Outside what any guest may import.
    pub forbidden: Vec<String>,
    /// Clocks, imported without `grants.clocks`.
    pub ungranted: Vec<String>,
}

/// Sort `imports` (names as a component lists them) against what a guest
/// with `grants` may import.
pub fn refused_imports(imports: &[String], grants: &Grants) -> RefusedImports {
    let mut refused = RefusedImports::default();
    for name in imports {
        let interface = unversioned(name);
        if ALLOWED_IMPORTS.contains(&interface) {
            continue;
        }
        if CLOCK_IMPORTS.contains(&interface) {
            if !grants.clocks {
                refused.ungranted.push(name.clone());
            }
            continue;
        }
        refused.forbidden.push(name.clone());
    }
    refused
}

/// Whether `component` exports the handler interface (in any 0.x version);
/// whether it fits the world is checked when it is linked.
pub fn exports_handler(engine: &Engine, component: &Component) -> bool {
    let component_type = component.component_type();
    let mut exports = component_type.exports(engine);
    exports.any(|(name, _)| unversioned(name) == HANDLER_EXPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn powerless_wasi_is_allowed_and_clocks_need_the_grant() {
        let imports = names(&[
            "wasi:filesystem/preopens@0.2.3",
            "wasi:sockets/tcp@0.2.3",
            "wasi:clocks/wall-clock@0.2.3",
            "wasi:http/outgoing-handler@0.2.3",
            "sandport:protocol/host@0.2.0",
        ]);
        let refused = refused_imports(&imports, &Grants::default());
        assert_eq!(refused.forbidden, names(&["wasi:http/outgoing-handler@0.2.3"]));
        assert_eq!(refused.ungranted, names(&["wasi:clocks/wall-clock@0.2.3"]));

        let granted = Grants { clocks: true, ..Grants::default() };
        let refused = refused_imports(&imports, &granted);
        assert!(refused.ungranted.is_empty());
        assert_eq!(refused.forbidden.len(), 1);
    }
}
