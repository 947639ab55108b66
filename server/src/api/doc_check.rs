//! docs/api.md against the code. The test fails when
//!
//! - a route of [`super::routes`] has no section `` ### `METHOD /path` `` there, or a section
//!   names a route that does not exist;
//! - a route's `- Auth:`, `- Query:`, `- Body:` or `- Answer:` line does not say what the route
//!   declares (the token or none; the name of its query, body and answer types; bytes; no body);
//! - a type of the contract ([`super::types`]) has no section `` ### `Type` ``, or its table
//!   does not list exactly the type's fields (an enum: its values), as serde reads them: the
//!   names are taken from the types' `Deserialize`, so a rename or a new field shows here.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::types::*;
use super::{routes, Payload};

/// What a type looks like on the wire: its fields, or (an enum) its values.
type Names = BTreeSet<String>;

fn names(list: &[&str]) -> Names {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A deserializer that only asks a type for its field names (or enum values), and answers
/// with them as its error.
struct Probe;

/// What the probe found: the names, or nothing (neither a struct nor an enum of values).
#[derive(Debug)]
struct Found(Option<Names>);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Found(None)
    }
}

impl<'de> Deserializer<'de> for Probe {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(Some(names(fields))))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(Some(names(variants))))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// The names `read` asks for (`read` is a type's `Deserialize::deserialize` or a `*Wire`'s).
fn probe<T>(read: fn(Probe) -> Result<T, Found>) -> Names {
    match read(Probe) {
        Err(Found(Some(n))) => n,
        _ => Names::new(),
    }
}

fn of<T: for<'de> Deserialize<'de>>() -> Names {
    probe(T::deserialize)
}

/// Every type docs/api.md documents, by the name it has there, with its names on the wire.
fn contract() -> BTreeMap<&'static str, Names> {
    let mut write = probe(IngestResultWire::deserialize);
    write.insert("broken_locks".into());
    BTreeMap::from([
        ("ErrorBody", of::<ErrorBody>()),
        ("ErrorKind", of::<ErrorKind>()),
        ("LockInfo", of::<LockInfo>()),
        ("PutQuery", of::<PutQuery>()),
        ("LocksQuery", of::<LocksQuery>()),
        ("RmQuery", of::<RmQuery>()),
        ("MkdirQuery", of::<MkdirQuery>()),
        ("RemoveQuery", of::<RemoveQuery>()),
        ("MvRequest", of::<MvRequest>()),
        ("PolicyRequest", of::<PolicyRequest>()),
        ("RetentionRequest", of::<RetentionRequest>()),
        ("TrashQuery", of::<TrashQuery>()),
        ("TrashRestoreRequest", of::<TrashRestoreRequest>()),
        ("TrashEmptyRequest", of::<TrashEmptyRequest>()),
        ("TrashResponse", of::<TrashResponse>()),
        ("TrashItem", of::<TrashItem>()),
        ("TrashFigures", of::<TrashFigures>()),
        ("TrashRestoreResponse", of::<TrashRestoreResponse>()),
        ("TrashEmptyResponse", of::<TrashEmptyResponse>()),
        ("UserInfo", of::<UserInfo>()),
        ("UsersResponse", of::<UsersResponse>()),
        ("UserRequest", of::<UserRequest>()),
        ("UserChange", of::<UserChange>()),
        ("UserAnswer", of::<UserAnswer>()),
        ("TokenInfo", of::<TokenInfo>()),
        ("TokensResponse", of::<TokensResponse>()),
        ("TokenRequest", of::<TokenRequest>()),
        ("TokenCreated", of::<TokenCreated>()),
        ("AccountChange", of::<AccountChange>()),
        ("HealthResponse", of::<HealthResponse>()),
        ("NodeHealth", of::<NodeHealth>()),
        ("EventsQuery", of::<EventsQuery>()),
        ("EventsResponse", of::<EventsResponse>()),
        ("EventRecord", of::<EventRecord>()),
        ("EventSeverity", of::<EventSeverity>()),
        ("AlertsResponse", of::<AlertsResponse>()),
        ("ActiveAlert", of::<ActiveAlert>()),
        ("Severity", of::<crate::alerts::conditions::Severity>()),
        ("Delivery", of::<Delivery>()),
        ("AlertTestResponse", of::<AlertTestResponse>()),
        ("NotifyTestResponse", of::<NotifyTestResponse>()),
        ("NotifyTestResult", of::<NotifyTestResult>()),
        ("MediaServerStatus", of::<MediaServerStatus>()),
        ("NotifyResult", of::<NotifyResult>()),
        ("NotifyOutcome", of::<NotifyOutcome>()),
        ("StatusResponse", of::<StatusResponse>()),
        ("Health", of::<Health>()),
        ("StatusCounters", of::<StatusCounters>()),
        ("RaftStatus", probe(RaftStatusWire::deserialize)),
        ("RaftRole", probe(RaftRoleWire::deserialize)),
        ("ClusterResponse", of::<ClusterResponse>()),
        // Adjacently tagged: serde asks for `state` and `detail`, not the values; the values
        // are FormationWire's, which the compiler checks against the engine's Formation.
        (
            "Formation",
            names(&[
                "starting",
                "searching",
                "blocked",
                "founded",
                "joined",
                "member",
            ]),
        ),
        ("Member", probe(MemberWire::deserialize)),
        ("DisksResponse", of::<DisksResponse>()),
        ("DiskReport", probe(DiskReportWire::deserialize)),
        ("Space", probe(SpaceWire::deserialize)),
        ("MountInfo", of::<wormfs_parts::disk::MountInfo>()),
        ("DiskState", probe(DiskStateWire::deserialize)),
        ("IngestStatusResponse", of::<IngestStatusResponse>()),
        ("DropFolderInfo", of::<DropFolderInfo>()),
        ("Item", probe(ItemWire::deserialize)),
        ("ItemState", probe(ItemStateWire::deserialize)),
        // IngestResult's fields flattened, and `broken_locks`.
        ("WriteResponse", write),
        ("BrokenLocks", of::<BrokenLocks>()),
        ("ChangesQuery", of::<ChangesQuery>()),
        ("ChangesResponse", of::<ChangesResponse>()),
        ("ChangeItem", of::<ChangeItem>()),
        // Internally tagged by `kind`: serde does not name the values to a deserializer.
        (
            "TreeChange",
            names(&["created", "deleted", "moved", "reset"]),
        ),
        ("ListResponse", of::<ListResponse>()),
        ("DirEntry", probe(DirEntryWire::deserialize)),
        ("EntryKind", probe(EntryKindWire::deserialize)),
        // Internally tagged by `kind`: serde does not name the values to a deserializer.
        ("StatResponse", names(&["dir", "file"])),
        ("DirStat", of::<DirStat>()),
        ("FileStat", of::<FileStat>()),
        ("SegmentStat", of::<SegmentStat>()),
        ("PartStat", of::<PartStat>()),
        ("Tolerance", of::<Tolerance>()),
        ("Geometry", of::<wormfs_parts::layout::Geometry>()),
        ("CodecId", of::<wormfs_parts::codec::CodecId>()),
        (
            "SourceIdentity",
            of::<wormfs_meta::command::SourceIdentity>(),
        ),
        ("PolicyResponse", of::<PolicyResponse>()),
        ("SnapshotResponse", of::<SnapshotResponse>()),
        ("SweepResponse", probe(SweepReportWire::deserialize)),
        ("RemoveResponse", of::<RemoveResponse>()),
        ("RepairNowRequest", of::<RepairNowRequest>()),
        ("RepairNowResponse", of::<RepairNowResponse>()),
        ("SegmentRef", of::<SegmentRef>()),
        ("ScrubRequest", of::<ScrubRequest>()),
        ("ImpactQuery", of::<ImpactQuery>()),
        ("ImpactResponse", of::<ImpactResponse>()),
        ("Impact", of::<Impact>()),
        ("HealthReport", of::<HealthReport>()),
        ("BackupStatus", of::<BackupStatus>()),
        ("Verdict", of::<Verdict>()),
        ("ToleranceCount", of::<ToleranceCount>()),
        ("FileAtRisk", of::<FileAtRisk>()),
        ("DiskStateRecord", of::<DiskStateRecord>()),
        ("DiskStatus", of::<DiskStatus>()),
        ("RepairStatus", of::<RepairStatus>()),
        ("QueuedRepair", of::<QueuedRepair>()),
        ("RepairInProgress", of::<RepairInProgress>()),
        ("RepairCounters", of::<RepairCounters>()),
        ("ScrubStatus", of::<ScrubStatus>()),
        ("ScrubCounters", of::<ScrubCounters>()),
        ("DiskChange", of::<DiskChange>()),
        ("RebalanceQuery", of::<RebalanceQuery>()),
        ("RebalanceReport", of::<RebalanceReport>()),
        ("DiskFill", of::<DiskFill>()),
        ("DiskPathRequest", of::<DiskPathRequest>()),
        ("ForceQuery", of::<ForceQuery>()),
        ("LoginRequest", of::<LoginRequest>()),
        ("SessionInfo", of::<SessionInfo>()),
    ])
}

/// The `###` sections of the document: heading (inside its backquotes) and the lines below
/// it up to the next heading.
fn sections(doc: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            out.extend(current.take());
            if let Some(h) = line.strip_prefix("### `") {
                if let Some(h) = h.strip_suffix('`') {
                    current = Some((h.to_owned(), Vec::new()));
                }
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_owned());
        }
    }
    out.extend(current);
    out
}

const VERBS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];

fn is_route(heading: &str) -> bool {
    heading
        .split_once(' ')
        .is_some_and(|(m, p)| VERBS.contains(&m) && p.starts_with('/'))
}

/// The rest of the line `- Key: rest` of a section.
fn line<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("- {key}: ");
    lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// The first column's `code` of each table row: a struct's fields, an enum's values.
fn table_names(lines: &[String]) -> Names {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Whether `text` says what `p` is.
fn says(text: &str, p: Payload, empty: &str) -> bool {
    match p {
        Payload::Empty => text.contains(empty),
        Payload::Bytes => text.contains("bytes"),
        Payload::Json(name) => text.contains(&format!("[`{name}`]")),
    }
}

#[test]
fn docs_api_md_documents_every_route_and_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let doc = std::fs::read_to_string(path).expect("docs/api.md");
    let secs = sections(&doc);
    let mut problems = Vec::new();

    let mut documented_routes: BTreeMap<String, &[String]> = BTreeMap::new();
    let mut documented_types: BTreeMap<String, &[String]> = BTreeMap::new();
    for (h, lines) in &secs {
        let map = if is_route(h) {
            &mut documented_routes
        } else {
            &mut documented_types
        };
        if map.insert(h.clone(), lines).is_some() {
            problems.push(format!("docs/api.md: two sections `{h}`"));
        }
    }

    let contract = contract();
    let mut served = BTreeSet::new();
    for r in routes() {
        let key = format!("{} {}", r.verb.as_str(), r.path);
        served.insert(key.clone());
        let Some(lines) = documented_routes.get(&key) else {
            problems.push(format!("route `{key}` has no section in docs/api.md"));
            continue;
        };
        let auth = line(lines, "Auth").unwrap_or("");
        let want = if r.auth { "token" } else { "none" };
        if !auth.starts_with(want) {
            problems.push(format!("`{key}`: the Auth line should start with {want:?}"));
        }
        let query = line(lines, "Query").unwrap_or("");
        let ok = match r.query {
            Some(q) => query.contains(&format!("[`{q}`]")),
            None => query.starts_with("none"),
        };
        if !ok {
            problems.push(format!(
                "`{key}`: the Query line should name {:?}",
                r.query.unwrap_or("none")
            ));
        }
        if !says(line(lines, "Body").unwrap_or(""), r.body, "none") {
            problems.push(format!("`{key}`: the Body line should say {:?}", r.body));
        }
        if !says(line(lines, "Answer").unwrap_or(""), r.answer, "no body") {
            problems.push(format!(
                "`{key}`: the Answer line should say {:?}",
                r.answer
            ));
        }
        for p in [r.body, r.answer]
            .into_iter()
            .filter_map(|p| match p {
                Payload::Json(n) => Some(n),
                _ => None,
            })
            .chain(r.query)
        {
            if !contract.contains_key(p) {
                problems.push(format!(
                    "`{key}` uses {p}, which doc_check's contract() does not list"
                ));
            }
        }
    }
    for key in documented_routes.keys() {
        if !served.contains(key) {
            problems.push(format!(
                "docs/api.md documents `{key}`, which the router does not serve"
            ));
        }
    }

    for (name, wire) in &contract {
        let Some(lines) = documented_types.get(*name) else {
            problems.push(format!("type `{name}` has no section in docs/api.md"));
            continue;
        };
        let listed = table_names(lines);
        for missing in wire.difference(&listed) {
            problems.push(format!("docs/api.md `{name}`: `{missing}` is not listed"));
        }
        for extra in listed.difference(wire) {
            problems.push(format!(
                "docs/api.md `{name}`: lists `{extra}`, which the type does not have"
            ));
        }
    }
    for name in documented_types.keys() {
        if !contract.contains_key(name.as_str()) {
            problems.push(format!(
                "docs/api.md documents type `{name}`, which the contract does not have"
            ));
        }
    }

    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The probe itself: a struct's fields after renames, an enum's values.
#[test]
fn the_probe_reads_serde_names() {
    assert_eq!(
        probe(RaftRoleWire::deserialize),
        names(&["leader", "follower", "candidate", "learner", "shutdown"])
    );
    assert!(of::<ErrorBody>().contains("kind"));
    assert!(probe(DiskReportWire::deserialize).contains("space"));
    assert!(contract().values().all(|n| !n.is_empty()));
}
