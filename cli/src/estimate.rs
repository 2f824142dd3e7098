//! `quantforge estimate` and `quantforge plan`: will this model fit, at what context, with how many layers on
//! the GPU, how fast can it decode at best, and which quantization to pick. The arithmetic lives in
//! `quantforge_quant::memory`; this file parses, calls and prints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quantforge_formats::hf::read_json;
use quantforge_quant::memory::{
    self, decode_bound, Bandwidth, Candidate, Device, DeviceKind, Estimate, KvCacheType, KvLayout, ModelShape, Offload,
    QualityTable, Resources, Settings, DEVICES,
};
use quantforge_quant::policy::FileType;
use serde_json::{json, Value};

use crate::quantize::parse_size;
use crate::{outln, report};

/// Types `estimate` shows for a HF model or config.json when no --type is given.
const DEFAULT_TYPES: &[FileType] = &[FileType::Q4_K_M, FileType::Q5_K_M, FileType::Q6_K, FileType::Q8_0, FileType::F16];

/// Types `plan` considers: every type quantforge can write, except F32.
const PLAN_TYPES: &[FileType] = &[
    FileType::Q2_K,
    FileType::Q3_K_S,
    FileType::Q3_K_M,
    FileType::Q3_K_L,
    FileType::IQ4_XS,
    FileType::IQ4_NL,
    FileType::Q4_0,
    FileType::Q4_1,
    FileType::Q4_K_S,
    FileType::Q4_K_M,
    FileType::Q5_0,
    FileType::Q5_1,
    FileType::Q5_K_S,
    FileType::Q5_K_M,
    FileType::Q6_K,
    FileType::Q8_0,
    FileType::F16,
    FileType::BF16,
];

/// Options shared by `estimate` and `plan`.
#[derive(clap::Args)]
pub struct Common {
    /// A GGUF file, a Hugging Face model directory, or a config.json.
    pub model: PathBuf,
    /// Quantization types (repeatable or comma-separated). Default: the GGUF as it is; Q4_K_M, Q5_K_M,
    /// Q6_K, Q8_0 and F16 for a HF model (`plan`: every type quantforge can write).
    #[arg(long = "type", short = 't', value_delimiter = ',')]
    pub types: Vec<String>,
    /// Parallel sequences (llama.cpp's -np).
    #[arg(long, default_value_t = 1)]
    pub parallel: u64,
    /// One KV cache shared by all sequences (llama.cpp's -kvu).
    #[arg(long)]
    pub kv_unified: bool,
    /// KV cache type for K and V: f16, q8_0, q4_0, ... (llama.cpp's -ctk/-ctv).
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Logical batch size (llama.cpp's -b).
    #[arg(long, default_value_t = 2048)]
    pub batch: u64,
    /// Physical batch size (llama.cpp's -ub); sizes the compute buffers.
    #[arg(long, default_value_t = 512)]
    pub ubatch: u64,
    /// Model llama.cpp run with flash attention off (-fa off): bigger compute buffers, f16/f32 V only.
    #[arg(long)]
    pub no_flash_attn: bool,
    /// Full-size sliding-window cache (llama.cpp's --swa-full).
    #[arg(long)]
    pub swa_full: bool,
    /// GPU memory (16GiB, 24G, 500M). Default: the --device's memory, if it is a GPU.
    #[arg(long, value_parser = parse_size)]
    pub vram: Option<u64>,
    /// Host RAM.
    #[arg(long, value_parser = parse_size)]
    pub ram: Option<u64>,
    /// Memory bandwidth of the GPU (or of the CPU when nothing is offloaded), e.g. 100GB/s.
    #[arg(long, value_parser = parse_bandwidth)]
    pub bandwidth: Option<f64>,
    /// Host RAM bandwidth, for the layers left on the CPU.
    #[arg(long, value_parser = parse_bandwidth)]
    pub ram_bandwidth: Option<f64>,
    /// A device from the built-in table (`--device list` shows it): its bandwidth, and its memory as --vram.
    #[arg(long)]
    pub device: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `estimate`.
#[derive(clap::Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Context per sequence (repeatable or comma-separated); llama.cpp runs with -c CTX*PARALLEL.
    #[arg(long, value_delimiter = ',', default_value = "8192")]
    pub ctx: Vec<u64>,
}

/// Arguments of `plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    /// Context per sequence.
    #[arg(long, default_value_t = 8192)]
    pub ctx: u64,
    /// Measured quality per type: the JSON of `eval compare --json`, or {"types": {"Q4_K_M": {"ppl": .., "kld":
    /// ..}, ...}}.
    #[arg(long)]
    pub quality: Option<PathBuf>,
}

/// `100GB/s`, `1.5TB/s`, `800 GiB/s`, `100G`: bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("/S")).unwrap_or(t);
    parse_size(t).map(|b| b as f64).map_err(|e| e.replace("size", "bandwidth"))
}

/// The resolved machine: budgets, bandwidths, and whether a GPU takes layers.
struct Machine {
    resources: Resources,
    bandwidth: Bandwidth,
    gpu: bool,
    device: Option<&'static Device>,
}

fn machine(c: &Common) -> Result<Machine> {
    let device = match &c.device {
        None => None,
        Some(id) => Some(
            Device::find(id).with_context(|| format!("unknown device '{id}'; known devices:\n{}", devices_text()))?,
        ),
    };
    let kind = device.map(|d| d.kind);
    let mut vram = c.vram.or_else(|| device.and_then(|d| d.memory_gib).map(|g| g << 30));
    if kind == Some(DeviceKind::Unified) && vram.is_none() {
        // One memory: llama.cpp offloads everything to the GPU backend (Metal) within the RAM budget.
        vram = c.ram;
    }
    let gpu = vram.is_some() || kind == Some(DeviceKind::Gpu) || kind == Some(DeviceKind::Unified);
    let dev_bw = device.map(Device::bytes_per_s);
    let mut bandwidth = Bandwidth::default();
    if gpu {
        bandwidth.device = c.bandwidth.or(dev_bw);
        bandwidth.host = c.ram_bandwidth.or(if kind == Some(DeviceKind::Unified) { dev_bw } else { None });
    } else {
        bandwidth.host = c.bandwidth.or(c.ram_bandwidth).or(dev_bw);
    }
    Ok(Machine { resources: Resources { vram, ram: c.ram }, bandwidth, gpu, device })
}

fn layout(c: &Common, ctx: u64) -> Result<KvLayout> {
    let kv = KvCacheType::parse(&c.kv_type)?;
    Ok(KvLayout {
        parallel: c.parallel,
        unified: c.kv_unified,
        batch: c.batch,
        ubatch: c.ubatch,
        type_k: kv,
        type_v: kv,
        flash_attn: !c.no_flash_attn,
        swa_full: c.swa_full,
        ..KvLayout::new(ctx)
    })
}

fn types(c: &Common, default: &[FileType], gguf_as_is: bool) -> Result<Vec<Option<FileType>>> {
    if c.types.is_empty() {
        return Ok(if gguf_as_is { vec![None] } else { default.iter().copied().map(Some).collect() });
    }
    c.types.iter().map(|t| Ok(Some(t.parse::<FileType>()?))).collect()
}

fn is_gguf(shape: &ModelShape) -> bool {
    shape.file_type.is_some() || shape.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn open(path: &Path) -> Result<ModelShape> {
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    Ok(ModelShape::open(path)?)
}

/// The offload used for speed and fit: the best `-ngl` under a VRAM budget, full offload on a GPU without
/// one, CPU-only otherwise.
fn chosen<'a>(e: &'a Estimate, m: &Machine) -> Option<&'a Offload> {
    if m.resources.vram.is_some() {
        e.best.as_ref()
    } else if m.gpu {
        Some(&e.full)
    } else {
        Some(&e.cpu)
    }
}

fn settings(c: &Common, m: &Machine, shape: &ModelShape, ctx: u64) -> Result<Settings> {
    // Search up to the training context (or 1M tokens when unknown).
    let max_ctx = shape.n_ctx_train.map_or(1 << 20, u64::from).max(256);
    Ok(Settings { layout: layout(c, ctx)?, resources: m.resources, max_ctx })
}

pub fn run_estimate(args: &EstimateArgs) -> Result<()> {
    let c = &args.common;
    if c.device.as_deref() == Some("list") {
        return Ok(report::emit(&devices_text())?);
    }
    let m = machine(c)?;
    let shape = open(&c.model)?;
    let types = types(c, DEFAULT_TYPES, is_gguf(&shape))?;
    let mut rows = Vec::new();
    for &ctx in &args.ctx {
        let s = settings(c, &m, &shape, ctx)?;
        for &ft in &types {
            rows.push((ctx, estimate_one(&shape, ft, &s)?));
        }
    }
    let text = if c.json { json_text(&shape, c, &m, &rows, None)? } else { estimate_text(&shape, c, &m, &rows) };
    report::emit(&text)?;
    Ok(())
}

fn estimate_one(shape: &ModelShape, ft: Option<FileType>, s: &Settings) -> Result<Estimate> {
    memory::estimate(shape, ft, s).with_context(|| format!("estimating {}", ft.map_or("the model as is", |f| f.name())))
}

pub fn run_plan(args: &PlanArgs) -> Result<()> {
    let c = &args.common;
    let m = machine(c)?;
    if m.resources.vram.is_none() && m.resources.ram.is_none() {
        bail!("plan needs a memory budget: --vram, --ram, or a --device with known memory");
    }
    let shape = open(&c.model)?;
    let quality = match &args.quality {
        None => None,
        Some(p) => Some(quality_table(p)?),
    };
    let s = settings(c, &m, &shape, args.ctx)?;
    let mut fitting = Vec::new();
    let mut rest = Vec::new();
    for ft in types(c, PLAN_TYPES, false)?.into_iter().flatten() {
        // A type whose mix cannot be planned for this model (no fallback for its rows) is skipped.
        let Ok(e) = memory::estimate(&shape, Some(ft), &s) else { continue };
        let fits =
            if m.resources.vram.is_some() { e.fits_fully(&m.resources) } else { e.max_ctx.unwrap_or(0) >= args.ctx };
        if fits {
            fitting.push(e);
        } else {
            rest.push(e);
        }
    }
    let candidates: Vec<Candidate> = fitting
        .iter()
        .filter_map(|e| {
            e.weights.ftype.map(|ftype| Candidate { ftype, bits_per_weight: e.weights.bits_per_weight, quality: None })
        })
        .collect();
    let (ranked, by) = memory::rank(candidates, quality.as_ref());
    let ordered: Vec<(u64, Estimate)> = ranked
        .iter()
        .filter_map(|cand| fitting.iter().find(|e| e.weights.ftype == Some(cand.ftype)).cloned())
        .map(|e| (args.ctx, e))
        .collect();
    let text = if c.json {
        let mut extra =
            json!({"ranked_by": by.name(), "does_not_fit": rest.iter().map(|e| e.weights.label()).collect::<Vec<_>>()});
        extra["quality"] = json!(ranked
            .iter()
            .map(|cand| json!({"type": cand.ftype.name(), "ppl": cand.quality.and_then(|q| q.ppl), "kld": cand.quality.and_then(|q| q.kld)}))
            .collect::<Vec<_>>());
        json_text(&shape, c, &m, &ordered, Some(extra))?
    } else {
        let mut o = String::new();
        header(&mut o, &shape, c, &m);
        if ordered.is_empty() {
            outln!(o, "No candidate type fits fully at {} tokens of context.", args.ctx);
        } else {
            outln!(o, "Types that fit, best first (ranked by {}):", by.name());
            outln!(o);
            table(&mut o, &ordered, &m, Some(&ranked));
        }
        if !rest.is_empty() {
            outln!(o);
            let names: Vec<String> = rest
                .iter()
                .map(|e| match e.best.as_ref().filter(|b| !b.is_full()) {
                    Some(b) => format!("{} (-ngl {})", e.weights.label(), b.ngl),
                    None => e.weights.label(),
                })
                .collect();
            outln!(o, "Do not fit fully: {}", names.join(", "));
        }
        o
    };
    report::emit(&text)?;
    Ok(())
}

/// The measured quality in `path`: the JSON of `eval compare --json`, or a `{"types": {TYPE: {ppl, kld}}}` table.
fn quality_table(path: &Path) -> Result<QualityTable> {
    let json = read_json(path)?;
    Ok(match quantforge_eval::compare::quality::quality_table(path, &json)? {
        Some(table) => table,
        None => QualityTable::parse(path, &json)?,
    })
}

fn header(o: &mut String, shape: &ModelShape, c: &Common, m: &Machine) {
    outln!(
        o,
        "{}: {} ({} layers, {} params, {} KV heads x {} dims{}{})",
        shape.path.display(),
        shape.info.arch,
        shape.n_layer(),
        report::si(shape.n_params()),
        shape.info.n_head_kv,
        shape.layers.first().map_or(0, |l| l.head_dim_k),
        if shape.n_swa > 0 { format!(", sliding window {}", shape.n_swa) } else { String::new() },
        if shape.tied_embeddings() { ", tied embeddings" } else { "" },
    );
    outln!(
        o,
        "settings: {} sequence(s){}, KV cache {}, flash attention {}, ubatch {}",
        c.parallel,
        if c.kv_unified { " (unified cache)" } else { "" },
        c.kv_type.to_lowercase(),
        if c.no_flash_attn { "off" } else { "on" },
        c.ubatch
    );
    let gb = |b: Option<f64>| b.map_or("?".to_string(), |b| format!("{:.1} GB/s", b / 1e9));
    match (m.resources.vram, m.resources.ram) {
        (None, None) => {}
        (v, r) => outln!(
            o,
            "budget: VRAM {}, RAM {}",
            v.map_or("-".into(), report::bytes),
            r.map_or("unlimited".into(), report::bytes)
        ),
    }
    if m.bandwidth.device.is_some() || m.bandwidth.host.is_some() {
        let d = m.device.map_or(String::new(), |d| format!(" ({}; {})", d.name, d.source));
        outln!(o, "bandwidth: GPU {}, host {}{d}", gb(m.bandwidth.device), gb(m.bandwidth.host));
    }
    outln!(o);
}

fn estimate_text(shape: &ModelShape, c: &Common, m: &Machine, rows: &[(u64, Estimate)]) -> String {
    let mut o = String::new();
    header(&mut o, shape, c, m);
    let mut seen = Vec::new();
    for (ctx, e) in rows {
        if seen.contains(ctx) {
            continue;
        }
        seen.push(*ctx);
        for seg in &e.kv.segments {
            outln!(
                o,
                "ctx {ctx}: llama_kv_cache{}: size = {:.2} MiB ({} cells, {} layers, {}/{} seqs), K ({}): {:.2} MiB, V ({}): {:.2} MiB",
                if seg.swa { " (SWA)" } else { "" },
                mib(seg.bytes()),
                seg.cells,
                seg.layers.len(),
                c.parallel,
                seg.n_stream,
                c.kv_type.to_lowercase(),
                mib(seg.k_bytes()),
                c.kv_type.to_lowercase(),
                mib(seg.v_bytes()),
            );
        }
    }
    outln!(o);
    table(&mut o, rows, m, None);
    outln!(o);
    if let Some((_, e)) = rows.first() {
        let w = &e.weights;
        outln!(
            o,
            "placement: token_embd ({}, {}) stays in host RAM; the output layer ({}, {}{}) goes to the GPU first, then blocks from the last.",
            w.token_embd_type.map_or("?", |t| t.name()),
            report::bytes(w.token_embd),
            w.output_type.map_or("?", |t| t.name()),
            report::bytes(w.output_layer_bytes()),
            if w.tied { ", a second copy of token_embd" } else { "" },
        );
    }
    if m.gpu {
        outln!(
            o,
            "GPU total = weights (all but token_embd) + KV + compute, with every layer offloaded (-ngl {}).",
            shape.n_layer() + 1
        );
    } else {
        outln!(
            o,
            "RAM total = weights + KV + compute + logits buffer, CPU only (give --vram or a GPU --device to offload)."
        );
    }
    outln!(o, "compute is an estimate (logits, KQ mask, FFN/attention scratch); weights and KV are exact.");
    if m.bandwidth.device.is_some() || m.bandwidth.host.is_some() {
        outln!(
            o,
            "tok/s is an upper bound for one sequence with the context full (memory bandwidth / bytes read per token)."
        );
    }
    o
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn table(o: &mut String, rows: &[(u64, Estimate)], m: &Machine, ranked: Option<&[Candidate]>) {
    let budget = m.resources.vram.is_some() || m.resources.ram.is_some();
    let speed = m.bandwidth.device.is_some() || m.bandwidth.host.is_some();
    // A GPU: memory with every layer offloaded; CPU only: all of it in RAM.
    let (col_a, col_b) = if m.gpu { ("GPU total", "host") } else { ("RAM total", "") };
    let mut head = format!(
        "{:<8} {:>7} {:>5} {:>11} {:>11} {:>10} {:>11} {:>10}",
        "type", "ctx", "BPW", "weights", "KV cache", "compute", col_a, col_b
    );
    if ranked.is_some() {
        head += &format!(" {:>9} {:>9}", "PPL", "KLD");
    }
    if budget {
        head += &format!(" {:>10} {:>9}", "fits", "max ctx");
    }
    if speed {
        head += &format!(" {:>9}", "tok/s");
    }
    outln!(o, "{head}");
    for (ctx, e) in rows {
        let full = &e.full;
        let mut line = format!(
            "{:<8} {:>7} {:>5.2} {:>11} {:>11} {:>10} {:>11} {:>10}",
            e.weights.label(),
            ctx,
            e.weights.bits_per_weight,
            report::bytes(e.weights.bytes),
            report::bytes(e.kv.bytes()),
            report::bytes(e.compute.device),
            report::bytes(if m.gpu { full.device.total() } else { e.cpu.host.total() }),
            if m.gpu { report::bytes(full.host.total()) } else { String::new() },
        );
        if let Some(r) = ranked {
            let q = e.weights.ftype.and_then(|f| r.iter().find(|c| c.ftype == f)).and_then(|c| c.quality);
            let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
            line += &format!(" {:>9} {:>9}", f(q.and_then(|q| q.ppl), 4), f(q.and_then(|q| q.kld), 6));
        }
        if budget {
            line += &format!(" {:>10} {:>9}", fit_word(e, m), e.max_ctx.map_or("-".into(), |c| c.to_string()));
        }
        if speed {
            let t = chosen(e, m).and_then(|off| decode_bound(&e.weights, &e.kv, off, *ctx, &m.bandwidth).tokens_per_s);
            line += &format!(" {:>9}", t.map_or("-".into(), |t| format!("{t:.1}")));
        }
        outln!(o, "{line}");
    }
}

fn fit_word(e: &Estimate, m: &Machine) -> String {
    if m.resources.vram.is_none() {
        return if m.resources.ram.is_none_or(|r| e.cpu.host.total() <= r) { "RAM".into() } else { "no".into() };
    }
    match &e.best {
        Some(b) if b.is_full() => "VRAM".into(),
        Some(b) => format!("-ngl {}", b.ngl),
        None => "no".into(),
    }
}

fn placement_json(p: &memory::Placement) -> Value {
    json!({"weights": p.weights, "kv": p.kv, "compute": p.compute, "output_buffer": p.output_buffer, "total": p.total()})
}

fn offload_json(o: &Offload) -> Value {
    json!({"ngl": o.ngl, "vram": placement_json(&o.device), "ram": placement_json(&o.host)})
}

fn json_text(
    shape: &ModelShape,
    c: &Common,
    m: &Machine,
    rows: &[(u64, Estimate)],
    extra: Option<Value>,
) -> Result<String> {
    let results: Vec<Value> = rows
        .iter()
        .map(|(ctx, e)| {
            let w = &e.weights;
            let bound = chosen(e, m).map(|off| {
                let b = decode_bound(w, &e.kv, off, *ctx, &m.bandwidth);
                json!({"ngl": off.ngl, "vram_bytes_per_token": b.device_bytes, "ram_bytes_per_token": b.host_bytes, "tokens_per_s": b.tokens_per_s})
            });
            json!({
                "type": w.label(),
                "ctx": ctx,
                "weights": {
                    "bytes": w.bytes, "bits_per_weight": w.bits_per_weight, "token_embd": w.token_embd,
                    "token_embd_type": w.token_embd_type.map(|t| t.name()), "output_layer": w.output_layer_bytes(),
                    "output_type": w.output_type.map(|t| t.name()), "layers": w.layers.iter().sum::<u64>(), "tied": w.tied,
                },
                "kv": {
                    "bytes": e.kv.bytes(), "n_ctx": e.kv.n_ctx, "n_ctx_seq": e.kv.n_ctx_seq,
                    "caches": e.kv.segments.iter().map(|s| json!({
                        "swa": s.swa, "cells": s.cells, "streams": s.n_stream, "layers": s.layers.len(),
                        "k_bytes": s.k_bytes(), "v_bytes": s.v_bytes(), "bytes": s.bytes(),
                    })).collect::<Vec<_>>(),
                },
                "compute": {"device": e.compute.device, "layer": e.compute.layer, "host": e.compute.host},
                "full_offload": offload_json(&e.full),
                "cpu_only": offload_json(&e.cpu),
                "best_offload": e.best.as_ref().map(offload_json),
                "fits_in_vram": m.resources.vram.map(|_| e.fits_fully(&m.resources)),
                "max_ctx": e.max_ctx,
                "decode": bound,
            })
        })
        .collect();
    let mut j = json!({
        "model": {
            "path": shape.path, "arch": shape.info.arch, "n_layer": shape.n_layer(), "n_embd": shape.n_embd,
            "n_head": shape.n_head, "n_head_kv": shape.info.n_head_kv, "n_vocab": shape.n_vocab, "n_swa": shape.n_swa,
            "n_ctx_train": shape.n_ctx_train, "parameters": shape.n_params(), "tied_embeddings": shape.tied_embeddings(),
        },
        "settings": {
            "parallel": c.parallel, "kv_unified": c.kv_unified, "kv_type": c.kv_type.to_lowercase(), "batch": c.batch,
            "ubatch": c.ubatch, "flash_attn": !c.no_flash_attn, "swa_full": c.swa_full,
            "vram": m.resources.vram, "ram": m.resources.ram,
            "bandwidth": {"vram": m.bandwidth.device, "ram": m.bandwidth.host},
            "device": m.device.map(|d| d.id),
        },
        "results": results,
    });
    if let Some(x) = extra {
        j["plan"] = x;
    }
    Ok(serde_json::to_string_pretty(&j)? + "\n")
}

/// The device table, shown when `--device` names an unknown device.
pub fn devices_text() -> String {
    let mut o = String::new();
    outln!(o, "{:<22} {:<48} {:>9} {:>7}  source", "id", "name", "GB/s", "memory");
    for d in DEVICES {
        outln!(
            o,
            "{:<22} {:<48} {:>9.1} {:>7}  {}",
            d.id,
            d.name,
            d.gb_per_s,
            d.memory_gib.map_or("-".into(), |g| format!("{g} GiB")),
            d.source
        );
    }
    o
}
