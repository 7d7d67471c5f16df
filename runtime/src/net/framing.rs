//! Native framers, from the `sandport-framing` crate, and the check of
//! the framing a guest declares in `describe`.

pub use sandport_framing::{Framing, FramingError};

use crate::wasm::bindings::types;

/// Check the framing a guest declared.
pub fn from_declared(declared: &types::Framing) -> Result<Framing, FramingError> {
    match declared {
        types::Framing::Delimiter(delimiter) => Framing::delimiter(delimiter),
        types::Framing::LengthPrefix(p) => Framing::length_prefix(p.offset, p.width, p.big_endian, p.adjust),
        types::Framing::VarintLength(v) => Framing::varint(v.offset, v.max_bytes),
        types::Framing::Guest => Ok(Framing::Guest),
    }
}
