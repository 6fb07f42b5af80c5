//! pv: falsifiable numerics contracts for transformer inference.
//!
//! The modules follow the data path: file formats ([`gguf`]), block formats ([`quant`]),
//! text to tokens ([`tokenizer`]), the engine ([`model`]), and the command line ([`cli`]).

pub mod fsutil;
pub mod gguf;
pub mod quant;
pub mod model;
pub mod tokenizer;
pub mod cli;
