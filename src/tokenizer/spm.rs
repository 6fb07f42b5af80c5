//! SentencePiece-style tokenization as llama.cpp does it for `tokenizer.ggml.model = "llama"`
//! (Llama 2, Gemma): special tokens are cut out of the text first (longest first), each
//! remaining piece has its spaces written as `▁` (and, when the model asks, one space put in
//! front of a piece that starts the text or follows a special token), then adjacent symbols
//! are merged greedily: always the pair whose joined text is a vocabulary entry with the
//! highest score (the leftmost on a tie). A symbol left with no entry of its own is undone
//! into the pair it was made from, down to single characters, and those fall back to byte
//! tokens `<0xXX>`.
//!
//! The order of operations and the tie-breaks follow llama.cpp's `llm_tokenizer_spm_session`
//! and `tokenizer_st_partition`, so the ids are the ones llama.cpp produces.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The space marker of SentencePiece vocabularies.
const SPACE: &str = "\u{2581}";

/// A SentencePiece vocabulary ready to encode.
#[derive(Clone, Debug)]
pub struct Spm {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    ids: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first: cut out of the text
    /// before anything else.
    specials: Vec<u32>,
    add_space_prefix: bool,
}

/// One symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// The heap's largest is the highest score, then the leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl Spm {
    /// A vocabulary of `tokens` with their GGUF `types` and `scores` (all the same length).
    pub fn new(
        tokens: Vec<String>,
        types: Vec<i32>,
        scores: Vec<f32>,
        add_space_prefix: bool,
    ) -> Spm {
        // As llama.cpp's token_to_id: a later entry of the same text wins.
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| matches!(types[i as usize], CONTROL | USER_DEFINED | UNKNOWN))
            .filter(|&i| !tokens[i as usize].is_empty())
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        Spm {
            tokens,
            types,
            scores,
            ids,
            specials,
            add_space_prefix,
        }
    }

    /// The ids of `text` (no BOS), special tokens recognised whole.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for part in self.partition(text) {
            match part {
                Part::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Part::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    let s = s.replace(' ', SPACE);
                    self.merge(&s, &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// The text cut at every special token: the longest specials first, each splitting every
    /// piece of text still left.
    fn partition<'t>(&self, text: &'t str) -> Vec<Part<'t>> {
        let mut parts = vec![Part::Text(text)];
        for &id in &self.specials {
            let needle = self.tokens[id as usize].as_str();
            if !text.contains(needle) {
                continue;
            }
            let mut next = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    Part::Text(mut t) => {
                        while let Some(at) = t.find(needle) {
                            if at > 0 {
                                next.push(Part::Text(&t[..at]));
                            }
                            next.push(Part::Special(id));
                            t = &t[at + needle.len()..];
                        }
                        if !t.is_empty() {
                            next.push(Part::Text(t));
                        }
                    }
                    special => next.push(special),
                }
            }
            parts = next;
        }
        parts
    }

    /// The greedy highest-score merge of one piece of text (spaces already `▁`).
    fn merge(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let mut made_from: HashMap<&str, (usize, usize)> = HashMap::new();
        for i in 1..symbols.len() {
            self.try_pair(
                text,
                Some(i - 1),
                Some(i),
                &symbols,
                &mut heap,
                &mut made_from,
            );
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // One side was merged since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            let (prev, next) = (symbols[b.left].prev, symbols[b.left].next);
            self.try_pair(
                text,
                prev,
                Some(b.left),
                &symbols,
                &mut heap,
                &mut made_from,
            );
            self.try_pair(
                text,
                Some(b.left),
                next,
                &symbols,
                &mut heap,
                &mut made_from,
            );
        }
        let mut i = (!symbols.is_empty()).then_some(0);
        while let Some(s) = i {
            self.resegment(text, &symbols, s, symbols[s].len, &made_from, out);
            i = symbols[s].next;
        }
    }

    /// Queues the merge of symbols `l` and `r` when their joined text is a vocabulary entry.
    fn try_pair<'t>(
        &self,
        text: &'t str,
        l: Option<usize>,
        r: Option<usize>,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Bigram>,
        made_from: &mut HashMap<&'t str, (usize, usize)>,
    ) {
        let (Some(l), Some(r)) = (l, r) else { return };
        let (a, b) = (symbols[l], symbols[r]);
        let joined = &text[a.start..b.start + b.len];
        if let Some(&id) = self.ids.get(joined) {
            heap.push(Bigram {
                left: l,
                right: r,
                score: self.scores[id as usize],
                len: joined.len(),
            });
            made_from.insert(joined, (l, r));
        }
    }

    /// The ids of symbol `s` (of `len` bytes): its own entry, else the two it was made from,
    /// else its bytes.
    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        s: usize,
        len: usize,
        made_from: &HashMap<&str, (usize, usize)>,
        out: &mut Vec<u32>,
    ) {
        let start = symbols[s].start;
        let piece = &text[start..start + len];
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        match made_from.get(piece) {
            Some(&(l, r)) => {
                let left_len = symbols[r].start - symbols[l].start;
                self.resegment(text, symbols, l, left_len, made_from, out);
                self.resegment(text, symbols, r, len - left_len, made_from, out);
            }
            None => out.extend(piece.bytes().filter_map(|b| self.byte_token(b))),
        }
    }

    /// The byte-fallback token of `b`: `<0xXX>`, else the byte as a one-character token.
    fn byte_token(&self, b: u8) -> Option<u32> {
        self.ids
            .get(&format!("<0x{b:02X}>"))
            .or_else(|| self.ids.get(&(b as char).to_string()))
            .copied()
    }

    /// The bytes token `id` stands for in text: `▁` as a space, byte tokens as their byte,
    /// special tokens as their text only when `specials` is set.
    pub fn piece_bytes(&self, id: u32, specials: bool) -> Vec<u8> {
        let Some(t) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            NORMAL => t.replace(SPACE, " ").into_bytes(),
            BYTE => t
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map_or_else(Vec::new, |b| vec![b]),
            // llama.cpp copies user-defined pieces as they are spelled, and unknown and
            // control pieces only when asked for special tokens.
            USER_DEFINED => t.clone().into_bytes(),
            CONTROL | UNKNOWN if specials => t.clone().into_bytes(),
            _ => Vec::new(),
        }
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether a leading space is added (and so removed again when decoding).
    pub fn adds_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
}

/// A piece of partitioned text.
enum Part<'t> {
    Text(&'t str),
    Special(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small Llama-2-style vocabulary: byte tokens, pieces with scores, a control token.
    fn vocab(add_space_prefix: bool) -> Spm {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![UNKNOWN, CONTROL, CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(BYTE);
        }
        let pieces = [
            ("▁", -1.0),
            ("h", -5.0),
            ("e", -5.0),
            ("l", -5.0),
            ("o", -5.0),
            ("w", -5.0),
            ("r", -5.0),
            ("d", -5.0),
            ("he", -3.0),
            ("ll", -2.0),
            ("llo", -2.5),
            ("hello", -1.5),
            ("▁hello", -1.0),
            ("▁w", -4.0),
            ("or", -3.5),
            ("▁wor", -3.0),
            ("ld", -3.0),
            ("<start>", 0.0),
        ];
        let mut scores = vec![0.0; tokens.len()];
        for (p, s) in pieces {
            tokens.push(p.into());
            types.push(if p == "<start>" { CONTROL } else { NORMAL });
            scores.push(s);
        }
        Spm::new(tokens, types, scores, add_space_prefix)
    }

    fn id(v: &Spm, t: &str) -> u32 {
        v.ids[t]
    }

    #[test]
    fn highest_score_merges_first_and_bytes_fill_the_gaps() {
        let v = vocab(true);
        let ids = v.encode("hello world");
        let want: Vec<u32> = ["▁hello", "▁wor", "ld"].iter().map(|t| id(&v, t)).collect();
        assert_eq!(ids, want);
        // 'z' has no piece: its byte token.
        let ids = v.encode("hez");
        assert_eq!(ids, vec![id(&v, "▁"), id(&v, "he"), id(&v, "<0x7A>")]);
        // A character of several bytes with no piece: one byte token per byte.
        let ids = v.encode("é");
        assert_eq!(ids, vec![id(&v, "▁"), id(&v, "<0xC3>"), id(&v, "<0xA9>")]);
    }

    #[test]
    fn special_tokens_are_cut_out_whole_and_restart_the_space_prefix() {
        let v = vocab(true);
        let ids = v.encode("<start>hello<start>");
        assert_eq!(
            ids,
            vec![id(&v, "<start>"), id(&v, "▁hello"), id(&v, "<start>")]
        );
        let no_prefix = vocab(false);
        assert_eq!(no_prefix.encode("hello"), vec![id(&no_prefix, "hello")]);
    }

    #[test]
    fn pieces_decode_spaces_and_bytes() {
        let v = vocab(true);
        assert_eq!(v.piece_bytes(id(&v, "▁hello"), false), b" hello");
        assert_eq!(v.piece_bytes(id(&v, "<0x7A>"), false), b"z");
        assert_eq!(v.piece_bytes(id(&v, "<start>"), false), b"");
        assert_eq!(v.piece_bytes(id(&v, "<start>"), true), b"<start>");
    }
}
