//! A bound on how deeply an XML request body nests, checked before any parser sees it.
//!
//! The XML parsers behind dav-server build trees recursively: about 2,000 nested elements
//! (14 KB) overflowed a worker's stack and aborted the whole node. This scan is a loop over the
//! bytes (no recursion, no allocation) that counts open elements and stops at the limit.

/// The deepest nesting accepted in a PROPFIND, PROPPATCH or LOCK body. Real clients use fewer
/// than ten levels (a dead property's value adds its own few).
pub const MAX_XML_DEPTH: usize = 100;

/// Finds `pat` in `b` from `from`; the index just after it.
fn skip_past(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    memchr::memmem::find(&b[from.min(b.len())..], pat).map(|i| from + i + pat.len())
}

/// Checks that no element of `body` is nested more than `max` deep. Comments, CDATA,
/// processing instructions, a DOCTYPE and quoted attribute values are skipped; malformed XML
/// that this scan cannot follow is left to the parser, which refuses it.
pub fn check(body: &[u8], max: usize) -> Result<(), String> {
    let too_deep = || format!("the XML body nests more than {max} elements deep");
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(off) = memchr::memchr(b'<', &body[i..]) {
        i += off + 1;
        let rest = &body[i..];
        let next = if rest.starts_with(b"!--") {
            skip_past(body, i + 3, b"-->")
        } else if rest.starts_with(b"![CDATA[") {
            skip_past(body, i + 8, b"]]>")
        } else if rest.starts_with(b"?") {
            skip_past(body, i + 1, b"?>")
        } else if rest.starts_with(b"!") {
            // DOCTYPE: up to the `>` that is not inside its internal subset.
            let mut bracket = 0i64;
            let mut j = i;
            loop {
                match body.get(j) {
                    None => break None,
                    Some(b'[') => bracket += 1,
                    Some(b']') => bracket -= 1,
                    Some(b'>') if bracket <= 0 => break Some(j + 1),
                    _ => {}
                }
                j += 1;
            }
        } else if rest.starts_with(b"/") {
            depth = depth.saturating_sub(1);
            skip_past(body, i, b">")
        } else {
            // A start tag: find its end outside quoted attribute values.
            let mut quote: Option<u8> = None;
            let mut j = i;
            let end = loop {
                match (body.get(j), quote) {
                    (None, _) => break None,
                    (Some(&q), Some(open)) if q == open => quote = None,
                    (Some(_), Some(_)) => {}
                    (Some(&q @ (b'"' | b'\'')), None) => quote = Some(q),
                    (Some(b'>'), None) => break Some(j),
                    _ => {}
                }
                j += 1;
            };
            match end {
                Some(e) => {
                    if body.get(e.wrapping_sub(1)) != Some(&b'/') || e == i {
                        depth += 1;
                        if depth > max {
                            return Err(too_deep());
                        }
                    }
                    Some(e + 1)
                }
                None => None,
            }
        };
        match next {
            Some(n) => i = n,
            None => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> Vec<u8> {
        let mut s = String::from("<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>");
        for _ in 0..n {
            s.push_str("<x>");
        }
        for _ in 0..n {
            s.push_str("</x>");
        }
        s.push_str("</D:prop></D:propfind>");
        s.into_bytes()
    }

    #[test]
    fn depth_is_counted_and_bounded() {
        assert!(check(&nested(10), MAX_XML_DEPTH).is_ok());
        assert!(check(&nested(98), MAX_XML_DEPTH).is_ok());
        assert!(check(&nested(99), MAX_XML_DEPTH).is_err());
        assert!(check(&nested(100_000), MAX_XML_DEPTH).is_err());
        // Siblings and empty elements do not add depth.
        let flat = "<a>".to_owned() + &"<b/><c></c>".repeat(10_000) + "</a>";
        assert!(check(flat.as_bytes(), 3).is_ok());
    }

    #[test]
    fn markup_that_is_not_an_element_is_skipped() {
        let s = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "<x><x><x>">]><a t="<x><x>" u='>'><!-- <x><x><x> --><![CDATA[<x><x><x>]]><b/></a>"#;
        assert!(check(s, 2).is_ok());
        assert!(check(b"<a><b><c></c></b></a>", 2).is_err());
        // Unclosed constructs end the scan; the parser refuses them.
        assert!(check(b"<a><!-- never closed", 1).is_ok());
        assert!(check(b"<a attr=\"never closed", 1).is_ok());
    }
}
