//! Looking into a box without consuming it (for the `cds-native-messaging` CLI): the messages in
//! the box and in its dead-letter box, and moving dead letters back or away under the box lock.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::Duration;

use super::line::{self, Line};
use super::lock::{BoxLock, LockSettings};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::transport::support::host::host_name;

/// One message line of a box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The topic (the original one of a claimed line).
    pub topic: String,
    /// The JSON body as written.
    pub json: String,
    /// The delivery attempt when a consumer holds the message, `None` when it waits.
    pub attempt: Option<u32>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::with_cause(ErrorCode::Io, format!("{what} {}", path.display()), e)
}

fn read(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_err("cannot read", path, e)),
    }
}

/// The message lines of `path` (a box or a dead-letter box), read without the lock and without
/// claiming (the box is replaced atomically, so a read sees one version). A last line whose JSON
/// is incomplete (an append in progress) is left out.
pub fn entries(path: &Path) -> Result<Vec<Entry>> {
    let content = read(path)?;
    Ok(parse_all(&content))
}

fn parse_all(content: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for raw in content.split('\n') {
        let (topic, json, attempt) = match line::parse(raw) {
            Line::Message { topic, json } => (topic, json, None),
            Line::Claimed { claim, topic, json } => (topic, json, Some(claim.attempt)),
            Line::Blank | Line::Malformed(_) => continue,
        };
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            continue;
        }
        out.push(Entry {
            topic: topic.to_string(),
            json: json.to_string(),
            attempt,
        });
    }
    out
}

/// Removes the given dead letters (topic and body as listed by [`entries`]) from `dead`; with
/// `redeliver` appends them to `box_path` first. Runs under the box lock (our consumers write the
/// dead-letter box under it). Returns how many were found and moved.
pub fn take_dead(
    box_path: &Path,
    dead: &Path,
    selected: &[(String, String)],
    redeliver: bool,
    log: &Logger,
) -> Result<usize> {
    let lock = BoxLock::new(
        box_path,
        host_name(),
        LockSettings {
            timeout: Duration::from_secs(5),
            stale_after: Duration::from_secs(10),
        },
    );
    let _guard = lock.acquire(log)?;
    let content = read(dead)?;
    let mut wanted: Vec<Option<&(String, String)>> = selected.iter().map(Some).collect();
    let mut keep = String::with_capacity(content.len());
    let mut moved = String::new();
    let mut n = 0;
    for raw in content.split('\n') {
        let hit = match line::parse(raw) {
            Line::Message { topic, json } | Line::Claimed { topic, json, .. } => wanted
                .iter_mut()
                .find(|w| w.is_some_and(|(t, j)| t == topic && j == json))
                .map(|w| w.take().map(|(t, j)| (t.clone(), j.clone()))),
            _ => None,
        };
        match hit.flatten() {
            Some((t, j)) => {
                line::write_message(&mut moved, &t, &j);
                n += 1;
            }
            None if raw.is_empty() => {}
            None => {
                keep.push('\n');
                keep.push_str(raw);
            }
        }
    }
    if n == 0 {
        return Ok(0);
    }
    if redeliver {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(box_path)
            .map_err(|e| io_err("cannot open for appending", box_path, e))?;
        f.write_all(moved.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err("cannot append to", box_path, e))?;
    }
    let mut tmp = dead.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(keep.as_bytes())?;
        f.sync_data()?;
        fs::rename(&tmp, dead)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot rewrite", dead, e)
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_waiting_and_claimed_but_not_torn_lines() {
        let c = "\na.b {\"data\":1}\n~claim/h/1.0.3/2/c.d {\"data\":2}\nbad\ne.f {\"data\":";
        let e = parse_all(c);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].topic.as_str(), e[0].attempt), ("a.b", None));
        assert_eq!((e[1].topic.as_str(), e[1].attempt), ("c.d", Some(2)));
    }

    #[test]
    fn redelivers_selected_dead_letters_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("box");
        let d = dir.path().join("box.dead");
        fs::write(&b, "\n").unwrap();
        fs::write(&d, "\na {\"data\":1}\nb {\"data\":2}\na {\"data\":1}").unwrap();
        let sel = vec![("a".to_string(), "{\"data\":1}".to_string())];
        let n = take_dead(&b, &d, &sel, true, &Logger::default()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(fs::read_to_string(&b).unwrap(), "\n\na {\"data\":1}");
        assert_eq!(entries(&d).unwrap().len(), 2);
    }
}
