//! This machine's host name, for consumer names and lock owners.

/// This machine's host name (`localhost` if it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace(['/', ' ', '\n'], "_");
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_never_empty_and_has_no_separators() {
        let h = super::host_name();
        assert!(!h.is_empty());
        assert!(!h.contains(['/', ' ', '\n']));
    }
}
