//! URL helpers shared by the transports: one password redaction and RFC 3986 percent coding.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`).
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `url` with its password replaced by `***` (`scheme://user:***@host…`), for log lines and
/// error messages; works on URLs that do not parse too.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rfind('@') {
            Some(i) => format!("***{}", &url[i..]),
            None => url.to_string(),
        };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@').or_else(|| {
        // A password with a '/' or '?' in it: the userinfo ends at the last '@' of the URL.
        rest.rfind('@').filter(|i| rest[..*i].contains(':'))
    });
    match at {
        Some(i) => {
            let user = rest[..i].split(':').next().unwrap_or_default();
            let masked = if rest[..i].contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}{}", &rest[i..])
        }
        None => url.to_string(),
    }
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_the_user_and_masks_the_password() {
        assert_eq!(redact("mqtt://u:secret@h:1/x"), "mqtt://u:***@h:1/x");
        assert_eq!(redact("amqp://u:secret@h:x y"), "amqp://u:***@h:x y");
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("mqtt://h:1"), "mqtt://h:1");
        assert_eq!(redact("mqtt://u@h"), "mqtt://u@h");
        assert_eq!(redact("u:secret@h"), "***@h");
        assert!(!redact("amqp://u:se/cr?et@h:1").contains("cr"));
    }

    #[test]
    fn percent_coding_round_trips_and_keeps_bad_escapes() {
        for s in ["a b/c", "ä:ö@ü", "plain-._~"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_encode("a b/ä"), "a%20b%2F%C3%A4");
        // Event Mesh topics and queue names as path segments (REST and management API).
        assert_eq!(percent_encode("my/ns/1/a b"), "my%2Fns%2F1%2Fa%20b");
        assert_eq!(percent_encode("+/+/+/ce/#"), "%2B%2F%2B%2F%2B%2Fce%2F%23");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("p%40ss"), "p@ss");
    }
}
