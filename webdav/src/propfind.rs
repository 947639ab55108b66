//! PROPFIND answers for properties that are not there.
//!
//! RFC 4918 (9.1) wants every property a PROPFIND names and a resource lacks reported in a
//! `404 Not Found` propstat; dav-server 0.11 builds those elements and then drops them. For a
//! request naming properties beyond the live ones dav-server always answers, the multistatus is
//! rewritten here with the missing ones added. Requests naming only common live properties (what
//! Finder, Explorer and rclone ask for when listing) pass untouched, so listings stay fast.

use xmltree::{Element, Namespace, XMLNode};

const DAV: &str = "DAV:";

/// Live properties dav-server answers for every resource.
const ALWAYS_ANSWERED: &[&str] = &[
    "creationdate",
    "displayname",
    "getetag",
    "getlastmodified",
    "resourcetype",
    "supportedlock",
    "lockdiscovery",
];

/// A property name: namespace (empty for none) and local name.
pub type PropName = (String, String);

/// The properties a PROPFIND body names in `<prop>`, if it is such a request and names any
/// property dav-server might leave out; `None` for `allprop`, `propname`, an empty body or
/// anything unparsable (dav-server answers those itself).
pub fn names_needing_404s(body: &[u8]) -> Option<Vec<PropName>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let root = Element::parse(body).ok()?;
    if root.name != "propfind" || root.namespace.as_deref() != Some(DAV) {
        return None;
    }
    let prop = root.get_child(("prop", DAV))?;
    let names: Vec<PropName> = prop
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .map(|e| (e.namespace.clone().unwrap_or_default(), e.name.clone()))
        .collect();
    let all_common = names
        .iter()
        .all(|(ns, n)| ns == DAV && ALWAYS_ANSWERED.contains(&n.as_str()));
    (!all_common).then_some(names)
}

fn present(response: &Element) -> Vec<PropName> {
    response
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .filter(|e| e.name == "propstat")
        .filter_map(|ps| ps.get_child(("prop", DAV)))
        .flat_map(|p| p.children.iter().filter_map(XMLNode::as_element))
        .map(|e| (e.namespace.clone().unwrap_or_default(), e.name.clone()))
        .collect()
}

fn dav(name: &str) -> Element {
    let mut e = Element::new(name);
    e.prefix = Some("D".into());
    e.namespace = Some(DAV.into());
    e
}

fn missing_elem(i: usize, (ns, name): &PropName) -> Element {
    let mut e = Element::new(name);
    if ns == DAV {
        e.prefix = Some("D".into());
        e.namespace = Some(DAV.into());
    } else if !ns.is_empty() {
        let pfx = format!("ns{i}");
        let mut n = Namespace::empty();
        n.put(pfx.as_str(), ns.as_str());
        e.prefix = Some(pfx);
        e.namespace = Some(ns.clone());
        e.namespaces = Some(n);
    }
    e
}

/// Adds to each `response` of a multistatus a 404 propstat for the `wanted` properties it
/// lacks. `None` if the body is not a multistatus (it is then left as it was).
pub fn add_missing(xml: &[u8], wanted: &[PropName]) -> Option<Vec<u8>> {
    let mut root = Element::parse(xml).ok()?;
    if root.name != "multistatus" {
        return None;
    }
    for node in root.children.iter_mut() {
        let Some(resp) = node.as_mut_element() else {
            continue;
        };
        if resp.name != "response" {
            continue;
        }
        let have = present(resp);
        let missing: Vec<&PropName> = wanted.iter().filter(|w| !have.contains(w)).collect();
        if missing.is_empty() {
            continue;
        }
        let mut prop = dav("prop");
        for (i, m) in missing.into_iter().enumerate() {
            prop.children.push(XMLNode::Element(missing_elem(i, m)));
        }
        let mut status = dav("status");
        status
            .children
            .push(XMLNode::Text("HTTP/1.1 404 Not Found".into()));
        let mut ps = dav("propstat");
        ps.children.push(XMLNode::Element(prop));
        ps.children.push(XMLNode::Element(status));
        resp.children.push(XMLNode::Element(ps));
    }
    let mut out = Vec::with_capacity(xml.len() + 256);
    root.write(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_listings_pass_untouched() {
        let body = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"#;
        assert_eq!(names_needing_404s(body), None);
        assert_eq!(names_needing_404s(b""), None);
        let allprop = br#"<propfind xmlns="DAV:"><allprop/></propfind>"#;
        assert_eq!(names_needing_404s(allprop), None);
    }

    #[test]
    fn missing_properties_get_a_404_propstat() {
        let body = br#"<propfind xmlns="DAV:"><prop><getetag/><x:color xmlns:x="urn:t"/><plain xmlns=""/></prop></propfind>"#;
        let wanted = names_needing_404s(body).unwrap();
        assert_eq!(wanted.len(), 3);
        let ms = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href><D:propstat><D:prop><D:getetag>"e"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let fixed = String::from_utf8(add_missing(ms, &wanted).unwrap()).unwrap();
        assert!(fixed.contains("404 Not Found"), "{fixed}");
        assert!(fixed.contains("color"), "{fixed}");
        assert!(fixed.contains("urn:t"), "{fixed}");
        assert!(fixed.contains("plain"), "{fixed}");
        let again = Element::parse(fixed.as_bytes()).unwrap();
        let resp = again.get_child(("response", DAV)).unwrap();
        assert_eq!(present(resp).len(), 3);
    }
}
