//! pv: falsifiable numerics contracts for transformer inference.
//!
//! The modules follow the data path: file formats ([`gguf`]), block formats ([`quant`]),
//! text to tokens ([`tokenizer`]), the engine ([`model`]), activation traces ([`trace`]),
//! contracts ([`contract`]) and the checkers they name ([`checkers`]), and the command line
//! ([`cli`]).

pub mod apr;
pub mod checkers;
pub mod cli;
pub mod contract;
pub mod evidence;
pub mod fetch;
pub mod fsutil;
pub mod gguf;
pub mod gitrepo;
pub mod model;
pub mod quant;
pub mod tokenizer;
pub mod trace;
