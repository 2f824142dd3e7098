//! `gguf.SpecialVocab` (`gguf-py/gguf/vocab.py` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): merges,
//! special token ids, add-BOS/EOS/SEP flags and the chat template, read from tokenizer.json,
//! tokenizer_config.json, chat_template.jinja/.json and config.json, in that order of precedence, and
//! written in `add_to_gguf`'s order. Python dict insertion order is kept (first write of a key wins its
//! position, later writes overwrite the value).
//!
//! Differences: the normalizer `lowercase` flag is not written (no supported architecture lowercases);
//! several named chat templates are listed in sorted order (gguf-py lists a Python `set`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Result;
use crate::hf::read_json;
use crate::kv::KvList;

/// The chat template: one string, or named templates.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTemplate {
    One(String),
    Named(Vec<(String, String)>),
}

/// What `SpecialVocab` collects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecialVocab {
    pub merges: Vec<String>,
    pub ids: Vec<(String, u32)>,
    pub add: Vec<(String, bool)>,
    pub chat_template: Option<ChatTemplate>,
    n_vocab: Option<usize>,
    types: Vec<&'static str>,
}

fn set_flag(v: &mut Vec<(String, bool)>, k: &str, b: bool) {
    match v.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = b,
        None => v.push((k.to_string(), b)),
    }
}

fn special_id(t: &Value) -> Option<&str> {
    t.get("SpecialToken").and_then(|s| s.get("id")).and_then(Value::as_str)
}

fn seq_id(t: &Value) -> Option<&str> {
    t.get("Sequence").and_then(|s| s.get("id")).and_then(Value::as_str)
}

impl SpecialVocab {
    /// Load from the model directory.
    pub fn load(dir: &Path, n_vocab: Option<usize>, load_merges: bool) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab {
            n_vocab,
            types: vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"],
            ..Default::default()
        };
        sv.load_tokenizer_json(dir, load_merges)?;
        let config = dir.join("config.json");
        if config.is_file() {
            let c = read_json(&config)?;
            for typ in sv.types.clone() {
                let key = format!("{typ}_token_id");
                let id = c.get(&key).or_else(|| c.get("text_config").and_then(|t| t.get(&key)));
                sv.set_special(typ, id.and_then(Value::as_u64));
            }
        }
        if load_merges && sv.merges.is_empty() {
            let path = dir.join("merges.txt");
            if path.is_file() {
                let text = crate::bounded::read_to_string_capped(&path, crate::bounded::MAX_JSON_BYTES, "merges.txt")?;
                let mut lines = text.lines().peekable();
                if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
                    lines.next();
                }
                sv.merges = lines
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .filter(|p| p.len() == 2)
                    .map(|p| format!("{} {}", p[0], p[1]))
                    .collect();
            }
        }
        Ok(sv)
    }

    fn set_special(&mut self, typ: &str, id: Option<u64>) {
        let Some(id) = id.and_then(|i| u32::try_from(i).ok()) else { return };
        if self.n_vocab.is_some_and(|n| id as usize >= n) || self.ids.iter().any(|(t, _)| t == typ) {
            return;
        }
        self.ids.push((typ.to_string(), id));
    }

    fn load_tokenizer_json(&mut self, dir: &Path, load_merges: bool) -> Result<()> {
        let tj = dir.join("tokenizer.json");
        let tokenizer = if tj.is_file() { Some(read_json(&tj)?) } else { None };
        let mut added_tokens = Vec::new();
        if let Some(t) = &tokenizer {
            if load_merges {
                self.merges = merges_of(t);
            }
            added_tokens = t.get("added_tokens").and_then(Value::as_array).cloned().unwrap_or_default();
        }
        let tcp = dir.join("tokenizer_config.json");
        let mut tc: Map<String, Value> =
            if tcp.is_file() { read_json(&tcp)?.as_object().cloned().unwrap_or_default() } else { Map::new() };
        if let Some(t) = &tokenizer {
            self.post_processor(t, &mut tc);
        }
        if tc.is_empty() {
            return Ok(());
        }
        self.chat_template = chat_template(dir, &tc)?;
        for typ in self.types.clone() {
            if let Some(b) = tc.get(&format!("add_{typ}_token")).and_then(Value::as_bool) {
                set_flag(&mut self.add, typ, b);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens.iter().find(|a| a.get("content").and_then(Value::as_str) == Some(&content));
            self.set_special(typ, id.and_then(|a| a.get("id")).and_then(Value::as_u64));
        }
        Ok(())
    }

    /// The crude TemplateProcessing/RobertaProcessing parsing of `_try_load_load_tokenizer_json`.
    fn post_processor(&mut self, tokenizer: &Value, tc: &mut Map<String, Value>) {
        let has_tc = !tc.is_empty();
        let get = |tc: &Map<String, Value>, k: &str| tc.get(k).cloned().filter(truthy);
        let mut bos = get(tc, "bos_token");
        let cls = get(tc, "cls_token");
        let mut eos = get(tc, "eos_token");
        let sep = get(tc, "sep_token");
        if bos.is_none() && cls.is_some() && has_tc {
            tc.insert("bos_token".into(), cls.clone().unwrap_or_default());
            bos = cls.clone();
        }
        if eos.is_none() && sep.is_some() && has_tc {
            tc.insert("eos_token".into(), sep.clone().unwrap_or_default());
            eos = sep.clone();
        }
        let Some(pp) = tokenizer.get("post_processor").filter(|p| truthy(p)) else { return };
        let processors = pp.get("processors").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![pp.clone()]);
        let is = |v: &Option<Value>, s: &str| v.as_ref().and_then(Value::as_str) == Some(s);
        for p in processors {
            match p.get("type").and_then(Value::as_str) {
                Some("RobertaProcessing") => {
                    for k in ["bos", "eos", "sep"] {
                        set_flag(&mut self.add, k, true);
                    }
                }
                Some("TemplateProcessing") => {
                    let empty = Vec::new();
                    let single = p.get("single").and_then(Value::as_array).unwrap_or(&empty);
                    let pair = p.get("pair").and_then(Value::as_array).unwrap_or(&empty);
                    let (mut first, mut last) = (None, None);
                    if single.len() > 1 {
                        first = special_id(&single[0]).map(str::to_string);
                        if let Some(f) = &first {
                            if !has_tc {
                                bos = Some(Value::String(f.clone()));
                            }
                            set_flag(&mut self.add, "bos", is(&bos, f) || is(&cls, f));
                        }
                        last = special_id(&single[single.len() - 1]).map(str::to_string);
                        if let Some(l) = &last {
                            if !has_tc {
                                eos = Some(Value::String(l.clone()));
                            } else if !is(&eos, l) {
                                let old = eos.clone().unwrap_or_default();
                                if !self.types.contains(&"eot") {
                                    self.types.push("eot");
                                    tc.insert("eot_token".into(), old);
                                } else if !self.types.contains(&"eom") {
                                    self.types.push("eom");
                                    tc.insert("eom_token".into(), old);
                                }
                                tc.insert("eos_token".into(), Value::String(l.clone()));
                                eos = Some(Value::String(l.clone()));
                            }
                            set_flag(&mut self.add, "eos", is(&eos, l));
                        }
                    }
                    if pair.is_empty() {
                        continue;
                    }
                    let start = usize::from(first.is_some() && special_id(&pair[0]) == first.as_deref());
                    let stop = usize::from(last.is_some() && special_id(&pair[pair.len() - 1]) == last.as_deref());
                    let Some(tp) = pair.get(start..pair.len().saturating_sub(stop)).filter(|t| !t.is_empty()) else {
                        continue;
                    };
                    if seq_id(&tp[0]) != Some("A") || seq_id(&tp[tp.len() - 1]) != Some("B") || tp.len() < 3 {
                        continue;
                    }
                    let mid = &tp[1..tp.len() - 1];
                    let mut add_sep = false;
                    if let Some(e) = special_id(&mid[0]) {
                        if (is(&sep, e) || is(&eos, e)) && last.is_none() {
                            add_sep = true;
                        }
                    }
                    if mid.len() == 2 {
                        if let Some(e) = special_id(&mid[1]) {
                            if is(&sep, e) || is(&eos, e) {
                                add_sep = true;
                            }
                        }
                    }
                    set_flag(&mut self.add, "sep", add_sep);
                    if add_sep && sep.is_none() && has_tc {
                        tc.insert("sep_token".into(), eos.clone().unwrap_or_default());
                    }
                }
                _ => {}
            }
        }
    }

    /// `SpecialVocab.add_to_gguf`.
    pub fn add_to(&self, kv: &mut KvList) {
        kv.strings("tokenizer.ggml.merges", self.merges.clone());
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "unk" => "unknown",
                "sep" => "seperator",
                "pad" => "padding",
                t => t,
            };
            kv.u32(format!("tokenizer.ggml.{key}_token_id"), *id);
        }
        for (typ, b) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                kv.bool(format!("tokenizer.ggml.add_{typ}_token"), *b);
            }
        }
        match &self.chat_template {
            Some(ChatTemplate::One(t)) => kv.string("tokenizer.chat_template", t.clone()),
            Some(ChatTemplate::Named(list)) => {
                let mut names = Vec::new();
                let mut default = None;
                for (name, t) in list {
                    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    if name == "default" {
                        default = Some(t.clone());
                    } else if !name.is_empty() {
                        kv.string(format!("tokenizer.chat_template.{name}"), t.clone());
                        names.push(name);
                    }
                }
                names.sort();
                names.dedup();
                kv.strings("tokenizer.chat_templates", names);
                if let Some(d) = default {
                    kv.string("tokenizer.chat_template", d);
                }
            }
            None => {}
        }
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    }
}

/// Merges as `"left right"` strings; list-form pairs with spaces get them encoded as U+0120.
fn merges_of(tokenizer: &Value) -> Vec<String> {
    let Some(m) = tokenizer.get("model").and_then(|m| m.get("merges")).and_then(Value::as_array) else {
        return Vec::new();
    };
    m.iter()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => {
                let parts: Vec<String> = pair
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|p| p.chars().map(|c| if c == ' ' { '\u{120}' } else { c }).collect())
                    .collect();
                Some(parts.join(" "))
            }
            _ => None,
        })
        .collect()
}

fn chat_template(dir: &Path, tc: &Map<String, Value>) -> Result<Option<ChatTemplate>> {
    let from_value = |v: &Value| match v {
        Value::String(s) => Some(ChatTemplate::One(s.clone())),
        Value::Array(a) => Some(ChatTemplate::Named(
            a.iter()
                .filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), e.get("template")?.as_str()?.to_string())))
                .collect(),
        )),
        _ => None,
    };
    if let Some(v) = tc.get("chat_template") {
        return Ok(from_value(v));
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let t =
            crate::bounded::read_to_string_capped(&jinja, crate::bounded::MAX_CHAT_TEMPLATE_BYTES, "chat template")?;
        return Ok(Some(ChatTemplate::One(t)));
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        return Ok(read_json(&json)?.get("chat_template").and_then(from_value));
    }
    Ok(None)
}
