//! Hugging Face–style sharded checkpoints: `pytorch_model-00001-of-00003.bin` (or
//! `model-00001-of-00003.safetensors`) next to `pytorch_model.bin.index.json`
//! (`model.safetensors.index.json`), whose `weight_map` names the shard of every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flambeau_core::{StateDict, Value};

use crate::{Error, LoadConfig, Result};

/// Index files are small (a line per tensor); anything far larger is not one.
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// `stem-0000N-of-0000M.ext` → `(stem, ext)`.
fn shard_parts(name: &str) -> Option<(&str, &str)> {
    let (rest, ext) = name.rsplit_once('.')?;
    let (rest, total) = rest.rsplit_once("-of-")?;
    let (stem, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(total) && digits(index)).then_some((stem, ext))
}

/// The index file that `path` stands for: the index itself, a shard's sibling index, or the
/// index in a directory. `None` when `path` is none of these.
pub fn index_for(path: &Path) -> Result<Option<PathBuf>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".index.json") {
        return Ok(Some(path.to_path_buf()));
    }
    if path.is_dir() {
        for index in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            if path.join(index).is_file() {
                return Ok(Some(path.join(index)));
            }
        }
        return Ok(None);
    }
    if let Some((stem, ext)) = shard_parts(name) {
        let index = path.with_file_name(format!("{stem}.{ext}.index.json"));
        if index.is_file() {
            return Ok(Some(index));
        }
        return Err(Error::Sharded {
            index,
            message: format!(
                "{name} is one shard of a sharded checkpoint, but the index that lists the others is missing; copy it next to the shards (or open the shard alone by renaming it)"
            ),
        });
    }
    Ok(None)
}

/// Reads the index's `weight_map`: shard file names in order of first appearance, and how many
/// keys each holds.
fn read_index(index: &Path) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let bad = |message: String| Error::Sharded {
        index: index.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(index).map_err(|e| Error::io(index, e))?;
    if meta.len() > MAX_INDEX_BYTES {
        return Err(bad(format!(
            "{} bytes is far too large for an index",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    parse_index(&text).map_err(bad)
}

/// Parses the text of an index file: the shard file names (sorted, which is shard order) and
/// the `key → shard` map. Shard names must be plain file names beside the index.
pub fn parse_index(
    text: &str,
) -> std::result::Result<(Vec<String>, BTreeMap<String, String>), String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or("no `weight_map` object (not a Hugging Face index file?)")?;
    let mut weight_map = BTreeMap::new();
    for (key, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format!("weight_map[{key:?}] is not a file name"))?;
        // Shards sit beside the index: a path that leaves the directory is refused.
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." || file == "." {
            return Err(format!(
                "weight_map[{key:?}] = {file:?} is not a file name beside the index"
            ));
        }
        weight_map.insert(key.clone(), file.to_string());
    }
    let mut shards: Vec<String> = weight_map.values().cloned().collect();
    shards.sort();
    shards.dedup();
    Ok((shards, weight_map))
}

/// Loads every shard named by `index` into one state dict: shards in file-name order (which is
/// shard order), each in its own order. Every key the index lists must be in its shard.
pub fn load(index: &Path, config: &LoadConfig) -> Result<(StateDict, usize)> {
    let (shards, weight_map) = read_index(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut sd = StateDict::new();
    for shard in &shards {
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(Error::Sharded {
                index: index.to_path_buf(),
                message: format!(
                    "shard {shard} is missing from {}; download or copy every shard the index lists",
                    dir.display()
                ),
            });
        }
        let part = crate::open::open_one(&path, config)?.value;
        let part = crate::find_state_dict(&part)?.state_dict;
        for (k, v) in part.iter_values() {
            match v {
                Value::Tensor(t) => {
                    sd.insert(k, t);
                }
                Value::RawTensor(r) => sd.insert_raw(k, r),
                _ => {}
            }
        }
    }
    for (key, shard) in &weight_map {
        if !sd.contains_key(key) {
            return Err(Error::Sharded {
                index: index.to_path_buf(),
                message: format!("the index puts `{key}` in {shard}, which does not hold it (mismatched or partly downloaded shards)"),
            });
        }
    }
    Ok((sd, shards.len()))
}

/// Bytes a state dict entry takes on disk.
fn entry_bytes(v: &Value) -> usize {
    match v {
        Value::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
        Value::RawTensor(r) => r.nbytes(),
        _ => 0,
    }
}

/// Parses a shard size as Hugging Face writes it: `500MB`, `2GB`, `10GiB`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => {
            return Err(Error::Unwritable(format!(
                "shards of size {s:?}: expected a number with an optional unit (500MB, 2GB, 10GiB)"
            )))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Unwritable(format!("shards of size {s:?}: `{num}` is not a number")))?;
    let bytes = n * mult as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(Error::Unwritable(format!(
            "shards of size {s:?}: the size must be at least one byte"
        )));
    }
    Ok(bytes as u64)
}

/// Writes `sd` as shards of at most `max_bytes` each (a tensor larger than that gets a shard
/// of its own, as Hugging Face does) next to `path`, named from it: `model.safetensors` →
/// `model-00001-of-00003.safetensors` + `model.safetensors.index.json`; any other name is
/// written with `torch.save`'s format (`pytorch_model.bin` → `pytorch_model-00001-of-….bin`).
/// When everything fits in one shard, `path` itself is written and no index. Returns the
/// files written (the index last).
pub fn save(sd: &StateDict, path: &Path, max_bytes: u64) -> Result<Vec<PathBuf>> {
    let safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let write = |part: &StateDict, to: &Path| -> Result<()> {
        if safetensors {
            crate::safetensors::save(part, to)
        } else {
            crate::save_state_dict(part, to)
        }
    };
    let mut shards: Vec<StateDict> = vec![StateDict::new()];
    let mut current = 0u64;
    let mut total = 0u64;
    for (k, v) in sd.iter_values() {
        let n = entry_bytes(&v) as u64;
        if current > 0 && current + n > max_bytes {
            shards.push(StateDict::new());
            current = 0;
        }
        current += n;
        total += n;
        let last = shards.last_mut().expect("one shard at least");
        match v {
            Value::Tensor(t) => {
                last.insert(k, t);
            }
            Value::RawTensor(r) => last.insert_raw(k, r),
            _ => {}
        }
    }
    if shards.len() == 1 {
        write(sd, path)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::UnnamableShards(path.to_path_buf()))?;
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "bin"));
    let n = shards.len();
    let mut written = Vec::with_capacity(n + 1);
    let mut weight_map = BTreeMap::new();
    for (i, part) in shards.iter().enumerate() {
        let file = format!("{stem}-{:05}-of-{n:05}.{ext}", i + 1);
        write(part, &path.with_file_name(&file))?;
        for k in part.keys() {
            weight_map.insert(k.to_string(), file.clone());
        }
        written.push(path.with_file_name(&file));
    }
    let index = path.with_file_name(format!("{name}.index.json"));
    let json = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    let mut text = serde_json::to_string_pretty(&json)
        .map_err(|e| Error::Unwritable(format!("the shard index: {e}")))?;
    text.push('\n');
    // Temporary file then rename, so a crash never leaves a half-written index.
    let tmp = index.with_file_name(format!(".{name}.index.json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &index).map_err(|e| Error::io(&index, e))?;
    written.push(index);
    Ok(written)
}
