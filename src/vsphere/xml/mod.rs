//! vim25 XML: decoding responses to JSON and encoding JSON arguments.

pub mod decode;
pub mod encode;
