//! `general.*` keys as gguf-py's `Metadata` derives them (`gguf-py/gguf/metadata.py` at
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): sampling defaults from generation_config.json, then name,
//! organization, basename, finetune, version and size label from the model card, `_name_or_path` and the
//! directory name, then licence, tags and languages from the model card's YAML front matter.
//!
//! Not ported: metadata override files, `base_model`/`datasets` entries of the model card (their
//! `general.base_model.*` keys are not written), and YAML beyond `key: value` and simple lists.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde_json::Value;

use super::HfConfig;
use crate::kv::KvList;

/// Scalar or list values of the model card front matter.
type Card = BTreeMap<String, Vec<String>>;

#[derive(Default)]
struct Meta {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    finetune: Option<String>,
    basename: Option<String>,
    description: Option<String>,
    size_label: Option<String>,
    license: Option<String>,
    license_name: Option<String>,
    license_link: Option<String>,
    tags: Vec<String>,
    languages: Vec<String>,
}

/// Write `general.type`, sampling keys and `general.*` authorship keys for the model in `dir`.
/// `total_params` counts the elements of the tensors being written.
pub fn general_metadata(kv: &mut KvList, dir: &Path, cfg: &HfConfig, total_params: u64) {
    general_metadata_with_experts(kv, dir, cfg, total_params, None);
}

/// [`general_metadata`] for a model with stacked experts: `experts` is `(shared + one expert's parameters,
/// expert count)` as gguf-py's `get_total_parameter_count` counts them (tensors named `*_exps.*`), and the
/// default size label is `{count}x{size}` (`gguf.utility.size_label`).
pub fn general_metadata_with_experts(
    kv: &mut KvList,
    dir: &Path,
    cfg: &HfConfig,
    total_params: u64,
    experts: Option<(u64, u64)>,
) {
    kv.string("general.type", "model");
    sampling(kv, dir);
    let card = model_card(dir);
    let mut m = Meta::default();
    let one = |k: &str| card.get(k).and_then(|v| v.first()).cloned();
    for (slot, keys) in [
        (&mut m.name, &["name", "model_name"][..]),
        (&mut m.author, &["author", "model_author", "model_creator"]),
        (&mut m.version, &["version", "model_version"]),
        (&mut m.organization, &["organization", "model_organization"]),
        (&mut m.description, &["description", "model_description"]),
        (&mut m.finetune, &["finetune", "model_finetune"]),
        (&mut m.basename, &["basename", "model_basename", "model_type"]),
        (&mut m.size_label, &["size_label", "model_size_label"]),
        (&mut m.license, &["license"]),
        (&mut m.license_name, &["license_name"]),
        (&mut m.license_link, &["license_link"]),
    ] {
        *slot = keys.iter().find_map(|k| one(k));
    }
    if let Some(l) = card.get("license").filter(|l| l.len() > 1) {
        m.license = Some(l.join(","));
    }
    for k in ["tags", "pipeline_tag"] {
        m.tags.extend(card.get(k).cloned().unwrap_or_default());
    }
    for k in ["languages", "language"] {
        m.languages.extend(card.get(k).cloned().unwrap_or_default());
    }
    if let Some(id) = cfg.name_or_path.as_deref().filter(|p| p.matches('/').count() <= 1) {
        apply_id(&mut m, id, total_params);
    }
    if let Some(dir_name) = model_dir_name(dir) {
        apply_id(&mut m, &dir_name, total_params);
    }
    if m.size_label.is_none() && total_params > 0 {
        m.size_label = Some(match experts {
            Some((active, count)) if count > 0 => format!("{count}x{}", size_label(active)),
            _ => size_label(total_params),
        });
    }
    kv.string("general.name", m.name.unwrap_or_default());
    for (key, v) in [
        ("general.author", m.author),
        ("general.version", m.version),
        ("general.organization", m.organization),
        ("general.finetune", m.finetune),
        ("general.basename", m.basename),
        ("general.description", m.description),
        ("general.size_label", m.size_label),
        ("general.license", m.license),
        ("general.license.name", m.license_name),
        ("general.license.link", m.license_link),
    ] {
        if let Some(v) = v {
            kv.string(key, v);
        }
    }
    kv.strings("general.tags", m.tags);
    kv.strings("general.languages", m.languages);
}

/// `generation_config.json` sampling defaults (`Metadata.load`), as `general.sampling.*`.
/// The folder's name as the model's id; a hub cache snapshot (`models--org--name/snapshots/<commit>`) is named
/// after its repo, not its commit, so a model converts the same from the cache as from a plain folder.
fn model_dir_name(dir: &Path) -> Option<String> {
    let d = dir.canonicalize().ok()?;
    let name = d.file_name()?.to_string_lossy().into_owned();
    let parent = d.parent()?;
    let repo = parent.parent()?.file_name()?.to_string_lossy().into_owned();
    match repo.strip_prefix("models--").and_then(|r| r.split_once("--")) {
        Some((_, repo_name)) if parent.file_name()? == "snapshots" => Some(repo_name.to_string()),
        _ => Some(name),
    }
}

fn sampling(kv: &mut KvList, dir: &Path) {
    let Ok(Value::Object(g)) = crate::hf::read_json(&dir.join("generation_config.json")) else { return };
    if let Some(s) = g.get("sequence").and_then(Value::as_str) {
        kv.string("general.sampling.sequence", s);
    }
    for (src, key, int) in [
        ("top_k", "top_k", true),
        ("top_p", "top_p", false),
        ("min_p", "min_p", false),
        ("xtc_probability", "xtc_probability", false),
        ("xtc_threshold", "xtc_threshold", false),
        ("temperature", "temp", false),
        ("penalty_last_n", "penalty_last_n", true),
        ("penalty_repeat", "penalty_repeat", false),
        ("mirostat", "mirostat", true),
        ("mirostat_tau", "mirostat_tau", false),
        ("mirostat_eta", "mirostat_eta", false),
    ] {
        let key = format!("general.sampling.{key}");
        match g.get(src) {
            Some(v) if int => {
                if let Some(i) = v.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    kv.i32(key, i);
                }
            }
            Some(v) => {
                if let Some(f) = v.as_f64() {
                    kv.f32(key, f);
                }
            }
            None => {}
        }
    }
}

/// The YAML front matter of README.md: `key: value` and `key:` followed by `- item` lines or `[a, b]`.
fn model_card(dir: &Path) -> Card {
    let mut card = Card::new();
    let readme = dir.join("README.md");
    let Ok(text) = crate::bounded::read_to_string_capped(&readme, crate::bounded::MAX_README_BYTES, "model card")
    else {
        return card;
    };
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return card;
    }
    let unquote = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    let mut current: Option<String> = None;
    for line in lines.take_while(|l| *l != "---") {
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            if let Some(k) = &current {
                card.entry(k.clone()).or_default().push(unquote(item));
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_string(), v.trim());
                current = Some(k.clone());
                if let Some(list) = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                    card.insert(k, list.split(',').map(unquote).filter(|s| !s.is_empty()).collect());
                } else if !v.is_empty() {
                    card.insert(k, vec![unquote(v)]);
                }
            }
        }
    }
    card
}

/// `apply_metadata_heuristic` for one model id: fill whatever is still unknown.
fn apply_id(m: &mut Meta, id: &str, total_params: u64) {
    let c = model_id_components(id, total_params);
    let fill = |slot: &mut Option<String>, v: Option<String>| {
        if slot.is_none() {
            *slot = v;
        }
    };
    fill(&mut m.name, Some(id_to_title(&c.full_name)));
    fill(&mut m.organization, c.org.as_deref().map(id_to_title));
    fill(&mut m.basename, c.basename);
    fill(&mut m.finetune, c.finetune);
    fill(&mut m.version, c.version);
    fill(&mut m.size_label, c.size_label);
}

struct IdComponents {
    full_name: String,
    org: Option<String>,
    basename: Option<String>,
    finetune: Option<String>,
    version: Option<String>,
    size_label: Option<String>,
}

/// `Metadata.get_model_id_components`.
fn model_id_components(id: &str, total_params: u64) -> IdComponents {
    let mut out = IdComponents {
        full_name: id.to_string(),
        org: None,
        basename: None,
        finetune: None,
        version: None,
        size_label: None,
    };
    if id.contains(' ') {
        return out;
    }
    let (org, name) = match id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()).filter(|o| !o.starts_with('.')), n),
        None => (None, id),
    };
    out.full_name = name.to_string();
    out.org = org;
    let re = |p: &str| Regex::new(&format!("(?i)^(?:{p})$")).expect("static regex");
    let (version_re, type_re) = (re(r"(v|iter)?\d+([.]\d+)*"), re(r"i?q\d(_\w)*|b?fp?(16|32)"));
    let size_re = re(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)");
    let finetune_re = re("chat|instruct|vision|lora");
    let mut parts: Vec<String> = name.split('-').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let mut types: Vec<Vec<&str>> = vec![Vec::new(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re.is_match(&part) {
            types[i].push("version");
        } else if type_re.is_match(&part) {
            types[i].push("type");
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re.is_match(&part) {
            let mut label = normalize_size_label(&part);
            if let Some(params) = label_params(&label).filter(|_| total_params > 0) {
                let t = total_params as f64;
                if (params - t).abs() > (7 * total_params / 8) as f64 {
                    types[i].push("finetune");
                    let last = label.pop().map(|c| c.to_ascii_lowercase()).unwrap_or_default();
                    label.push(last);
                }
            }
            if types[i].is_empty() {
                types[i].push("size_label");
            }
            parts[i] = label;
        } else if i > 0 && finetune_re.is_match(&part) {
            types[i].push("finetune");
        }
    }
    let has_numeric_size =
        parts.iter().zip(&types).any(|(p, t)| t.contains(&"size_label") && p.chars().any(|c| c.is_ascii_digit()));
    if has_numeric_size {
        for (p, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains(&"size_label") && p.chars().all(char::is_alphabetic) {
                t.retain(|x| *x != "size_label");
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        if at_start && ((t.is_empty() && p.starts_with(char::is_alphabetic)) || t.contains(&"version")) {
            t.push("basename");
        } else {
            at_start = false;
            if t.is_empty() {
                t.push("finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains(&"basename") && t.len() > 1 {
            t.retain(|x| *x != "basename");
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&[&str]) -> bool| {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if f(t) && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        Some(seen.join("-")).filter(|s| !s.is_empty())
    };
    out.size_label = join(&|t| t.contains(&"size_label"));
    out.finetune = join(&|t| t.contains(&"finetune"));
    out.version = join(&|t| t.contains(&"version") && !t.contains(&"basename"));
    out.basename = join(&|t| t.contains(&"basename"));
    if out.size_label.is_none() && out.finetune.is_none() && out.version.is_none() {
        out.basename = None;
    }
    out
}

fn normalize_size_label(label: &str) -> String {
    let mut l: Vec<char> = label.replace('_', ".").chars().collect();
    let n = l.len();
    if n >= 2 && l[n - 1].is_ascii_digit() {
        // bloom-7b1 -> 7.1b
        let (a, b) = (l[n - 2], l[n - 1]);
        l.truncate(n - 2);
        l.extend(['.', b, a]);
    }
    let n = l.len();
    if n > 1 && l[n - 2].is_ascii_digit() && "kmbt".contains(l[n - 1]) {
        l[n - 1] = l[n - 1].to_ascii_uppercase();
    }
    l.into_iter().collect()
}

fn label_params(label: &str) -> Option<f64> {
    let (num, suffix) = label.split_at(label.len().checked_sub(1)?);
    let scale = match suffix {
        "K" => 1e3,
        "M" => 1e6,
        "B" => 1e9,
        "T" => 1e12,
        " " => 1.0,
        _ => 1e-3,
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// `Metadata.id_to_title`.
fn id_to_title(s: &str) -> String {
    let keep = Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").expect("static regex");
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| if is_lower(w) && !keep.is_match(w) { title(w) } else { w.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python `str.islower`.
fn is_lower(w: &str) -> bool {
    w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase)
}

/// Python `str.title`: a cased letter is upper-cased after a non-letter, lower-cased after a letter.
fn title(w: &str) -> String {
    let mut prev_cased = false;
    w.chars()
        .map(|c| {
            let out: String = if prev_cased { c.to_lowercase().collect() } else { c.to_uppercase().collect() };
            prev_cased = c.is_alphabetic();
            out
        })
        .collect()
}

/// `gguf.size_label` for a dense model (`model_weight_count_rounded_notation(n, min_digits=2)`).
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round_ties_even() as u64).trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_id_heuristics_match_gguf_py() {
        let c = model_id_components("HuggingFaceTB/SmolLM2-135M-Instruct", 134_515_008);
        assert_eq!(id_to_title(&c.full_name), "SmolLM2 135M Instruct");
        assert_eq!(c.org.as_deref().map(id_to_title).as_deref(), Some("HuggingFaceTB"));
        assert_eq!(
            (c.basename.as_deref(), c.size_label.as_deref(), c.finetune.as_deref()),
            (Some("SmolLM2"), Some("135M"), Some("Instruct"))
        );
        let c = model_id_components("stories260K", 260_032);
        assert_eq!((c.full_name.as_str(), c.basename, c.size_label), ("stories260K", None, None));
        assert_eq!(id_to_title("llama-2-7b-hf"), "Llama 2 7b Hf");
        assert_eq!(size_label(260_032), "260K");
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_100_048_384), "1.1B");
    }
}
