//! Whether two traces may be compared at all: the same tokens, layers, slots and scopes.
//! Comparing statistics computed over different samples is an error, not a number.

use super::stats::ActivationStats;
use super::types::{ForwardTrace, SlotStats};
use crate::model::Slot;

/// Why two traces are not comparable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParityError {
    /// The token sequences differ.
    #[error("traces cover different tokens ({a} vs {b} ids, or different ids)")]
    Tokens {
        /// Token count of the first trace.
        a: usize,
        /// Token count of the second trace.
        b: usize,
    },
    /// The layer counts differ.
    #[error("traces have {a} and {b} layers")]
    Layers {
        /// Layers of the first trace.
        a: usize,
        /// Layers of the second trace.
        b: usize,
    },
    /// A slot's statistics cover different samples.
    #[error("{location}: scope {scope} differs ({a} vs {b})")]
    Scope {
        /// Where (`layers[3].ffn_inner` or `logits`).
        location: String,
        /// Which scope (`all`, `last`, `per_token[i]`).
        scope: String,
        /// The first trace's scope.
        a: String,
        /// The second trace's scope.
        b: String,
    },
    /// A slot is recorded in one trace and not the other (different families).
    #[error("{location}: recorded in only one trace")]
    Slot {
        /// Where.
        location: String,
    },
    /// One trace has per-token statistics and the other not.
    #[error("{location}: per-token statistics present in only one trace")]
    PerToken {
        /// Where.
        location: String,
    },
}

fn scope_str(s: &ActivationStats) -> String {
    let c = &s.scope;
    format!(
        "{:?} positions {}..={} x {} = {}",
        c.kind, c.first_position, c.last_position, c.width, c.elements
    )
}

/// How many positions a slot covers and how wide each is: what two engines must agree on
/// before their values can be compared.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Shape {
    /// Positions (tokens) covered.
    pub positions: usize,
    /// Values per position.
    pub width: usize,
}

impl Shape {
    /// The shape of a slot's statistics (its all-positions scope).
    pub fn of(s: &SlotStats) -> Self {
        let c = &s.all.scope;
        Shape {
            positions: c.last_position + 1 - c.first_position,
            width: c.width,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} positions x {}", self.positions, self.width)
    }
}

/// A slot both engines recorded with different shapes: a finding at that slot (one engine
/// computed something of another size), not a reason to refuse the comparison.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ShapeMismatch {
    /// The layer, or `None` for a once-per-pass slot.
    pub layer: Option<usize>,
    /// The slot.
    pub slot: Slot,
    /// Its shape in the first trace and in the second.
    pub shapes: [Shape; 2],
}

/// What [`parity`] found besides agreement: slots one side could not capture, and slots
/// whose shapes differ.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parity {
    /// Slots a partial side did not capture.
    pub not_captured: Vec<NotCaptured>,
    /// Slots both recorded with different shapes.
    pub mismatched: Vec<ShapeMismatch>,
}

fn check_slot(location: &str, a: &SlotStats, b: &SlotStats) -> Result<(), ParityError> {
    for (scope, x, y) in [("all", &a.all, &b.all), ("last", &a.last, &b.last)] {
        if x.scope != y.scope {
            return Err(ParityError::Scope {
                location: location.into(),
                scope: scope.into(),
                a: scope_str(x),
                b: scope_str(y),
            });
        }
    }
    match (&a.per_token, &b.per_token) {
        (None, None) => Ok(()),
        (Some(x), Some(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if p.scope != q.scope {
                    return Err(ParityError::Scope {
                        location: location.into(),
                        scope: format!("per_token[{i}]"),
                        a: scope_str(p),
                        b: scope_str(q),
                    });
                }
            }
            Ok(())
        }
        _ => Err(ParityError::PerToken {
            location: location.into(),
        }),
    }
}

/// Checks that `a` and `b` have the same tokens, layers, slots and scopes, so that their
/// statistics describe the same samples.
pub fn check_parity(a: &ForwardTrace, b: &ForwardTrace) -> Result<(), ParityError> {
    match parity(a, b, [false, false])?.mismatched.first() {
        Some(m) => Err(ParityError::Scope {
            location: m.layer.map_or(m.slot.name().to_string(), |l| {
                format!("layers[{l}].{}", m.slot.name())
            }),
            scope: "all".into(),
            a: m.shapes[0].to_string(),
            b: m.shapes[1].to_string(),
        }),
        None => Ok(()),
    }
}

/// A slot one engine recorded and the other could not capture.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct NotCaptured {
    /// The layer, or `None` for a once-per-pass slot (`embd`, `final_norm`).
    pub layer: Option<usize>,
    /// The slot.
    pub slot: Slot,
    /// The engine that did not capture it (its trace's `engine`).
    pub engine: String,
}

/// Two traces' agreement on what they cover, where side `i` may leave per-layer slots out
/// when `partial[i]` (an engine other than pv's, which captures what it can and never
/// invents the rest): the slots one side lacks are returned, not refused, and so are slots
/// both record with different shapes (a finding at that slot). Tokens and layers must
/// agree, and the scopes of every slot of the same shape.
pub fn parity(
    a: &ForwardTrace,
    b: &ForwardTrace,
    partial: [bool; 2],
) -> Result<Parity, ParityError> {
    if a.tokens != b.tokens {
        return Err(ParityError::Tokens {
            a: a.tokens.len(),
            b: b.tokens.len(),
        });
    }
    if a.layers.len() != b.layers.len() {
        return Err(ParityError::Layers {
            a: a.layers.len(),
            b: b.layers.len(),
        });
    }
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    once(
        &mut missing,
        &mut mismatched,
        "embd",
        Slot::Embd,
        [&a.embd, &b.embd],
        [a, b],
        partial,
    )?;
    for (l, (la, lb)) in a.layers.iter().zip(&b.layers).enumerate() {
        let slots: std::collections::BTreeSet<Slot> =
            la.slots().chain(lb.slots()).map(|(s, _)| s).collect();
        for slot in slots {
            let location = format!("layers[{l}].{}", slot.name());
            let lacking = match (la.get(slot), lb.get(slot)) {
                (Some(x), Some(y)) => {
                    if !shapes_differ(&mut mismatched, Some(l), slot, x, y) {
                        check_slot(&location, x, y)?;
                    }
                    continue;
                }
                (Some(_), None) if partial[1] => &b.engine,
                (None, Some(_)) if partial[0] => &a.engine,
                _ => return Err(ParityError::Slot { location }),
            };
            missing.push(NotCaptured {
                layer: Some(l),
                slot,
                engine: lacking.clone(),
            });
        }
    }
    once(
        &mut missing,
        &mut mismatched,
        "final_norm",
        Slot::FinalNorm,
        [&a.final_norm, &b.final_norm],
        [a, b],
        partial,
    )?;
    let (la, lb) = (a.logits.stats(), b.logits.stats());
    if !shapes_differ(&mut mismatched, None, Slot::Logits, &la, &lb) {
        check_slot("logits", &la, &lb)?;
    }
    Ok(Parity {
        not_captured: missing,
        mismatched,
    })
}

/// Records a shape mismatch of a slot both traces hold; whether there was one.
fn shapes_differ(
    out: &mut Vec<ShapeMismatch>,
    layer: Option<usize>,
    slot: Slot,
    a: &SlotStats,
    b: &SlotStats,
) -> bool {
    let shapes = [Shape::of(a), Shape::of(b)];
    if shapes[0] == shapes[1] {
        return false;
    }
    out.push(ShapeMismatch {
        layer,
        slot,
        shapes,
    });
    true
}

/// A once-per-pass slot that only a partial side may lack.
fn once(
    missing: &mut Vec<NotCaptured>,
    mismatched: &mut Vec<ShapeMismatch>,
    location: &str,
    slot: Slot,
    stats: [&Option<SlotStats>; 2],
    traces: [&ForwardTrace; 2],
    partial: [bool; 2],
) -> Result<(), ParityError> {
    let lacking = match stats {
        [Some(x), Some(y)] => {
            if shapes_differ(mismatched, None, slot, x, y) {
                return Ok(());
            }
            return check_slot(location, x, y);
        }
        [None, None] if partial[0] || partial[1] => {
            let i = if partial[0] { 0 } else { 1 };
            traces[i]
        }
        [Some(_), None] if partial[1] => traces[1],
        [None, Some(_)] if partial[0] => traces[0],
        _ => {
            return Err(ParityError::Slot {
                location: location.into(),
            });
        }
    };
    missing.push(NotCaptured {
        layer: None,
        slot,
        engine: lacking.engine.clone(),
    });
    Ok(())
}
