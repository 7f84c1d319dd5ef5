//! The config of a split image: a document hoist builds, serialised once. Every field of the
//! original is kept in its order (unknown ones too); only `rootfs.diff_ids` (one entry per
//! part) and `history` (one entry per part, so the non-empty entries still match the layers)
//! change.

use serde_json::{Map, Value};

use super::SplitError;
use crate::digest::Digest;

/// The rewritten config: `parts[i]` holds the diff_ids of layer `i`'s parts, or its own
/// diff_id alone when it is not split.
pub fn rewrite(original: &[u8], parts: &[Vec<Digest>]) -> Result<Vec<u8>, SplitError> {
    let bad = |why: &str| SplitError::Config(why.to_string());
    let mut doc: Map<String, Value> =
        serde_json::from_slice(original).map_err(|e| SplitError::Config(e.to_string()))?;
    let diff_ids = doc
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("it has no rootfs.diff_ids"))?;
    if diff_ids.len() != parts.len() {
        return Err(bad("rootfs.diff_ids does not list one entry per layer"));
    }
    *diff_ids = parts
        .iter()
        .flatten()
        .map(|d| Value::String(d.to_string()))
        .collect();
    if let Some(history) = doc.get_mut("history").and_then(Value::as_array_mut) {
        *history = split_history(std::mem::take(history), parts);
    }
    serde_json::to_vec(&doc).map_err(|e| SplitError::Config(e.to_string()))
}

/// One history entry per part: the first part keeps the layer's entry, each other part gets a
/// copy whose `created_by` says which part of it it is. A history whose non-empty entries do
/// not match the layers gets no new entries past its end.
fn split_history(history: Vec<Value>, parts: &[Vec<Digest>]) -> Vec<Value> {
    let mut out = Vec::with_capacity(history.len() + parts.len());
    let mut layer = 0usize;
    for entry in history {
        let empty = entry
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let n = if empty {
            0
        } else {
            parts.get(layer).map_or(1, Vec::len)
        };
        if !empty {
            layer += 1;
        }
        out.push(entry.clone());
        for k in 2..=n {
            let mut part = entry.clone();
            if let Some(obj) = part.as_object_mut() {
                let made_by = obj.get("created_by").and_then(Value::as_str).unwrap_or("");
                let text = format!(
                    "hoist --split-layers: part {k} of {n} of the layer made by: {made_by}"
                );
                obj.insert("created_by".into(), Value::String(text));
                obj.remove("comment");
            }
            out.push(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_and_history_list_every_part_and_other_fields_stay() {
        let d = |b: &[u8]| Digest::sha256_of(b);
        let original = format!(
            r#"{{"zzz":1,"architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},"history":[{{"created_by":"FROM x"}},{{"created_by":"ENV a=b","empty_layer":true}},{{"created":"2024-01-01T00:00:00Z","created_by":"RUN big","comment":"c"}}],"os":"linux"}}"#,
            d(b"a"),
            d(b"b")
        );
        let parts = vec![vec![d(b"a")], vec![d(b"p1"), d(b"p2"), d(b"p3")]];
        let out: Value =
            serde_json::from_slice(&rewrite(original.as_bytes(), &parts).unwrap()).unwrap();
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["zzz", "architecture", "rootfs", "history", "os"]);
        let ids: Vec<&str> = out["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[3], d(b"p3").to_string());
        let history = out["history"].as_array().unwrap();
        assert_eq!(history.len(), 5);
        let non_empty = history
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count();
        assert_eq!(non_empty, 4);
        assert_eq!(history[2]["created_by"], "RUN big");
        assert_eq!(history[2]["comment"], "c");
        assert_eq!(
            history[4]["created_by"],
            "hoist --split-layers: part 3 of 3 of the layer made by: RUN big"
        );
        assert_eq!(history[4]["created"], "2024-01-01T00:00:00Z");
    }
}
